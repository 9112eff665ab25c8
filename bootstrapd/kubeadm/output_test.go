package kubeadm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testToken   = "kbex01.s3cr3tt0k3n00001"
	testCertKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// TestOutputMasksSecretsFromARealProcess runs a process that prints what
// kubeadm prints around secrets, on both streams and in pieces, through
// the stage's runner.
func TestOutputMasksSecretsFromARealProcess(t *testing.T) {
	var journal bytes.Buffer
	out := newOutput(slog.New(slog.NewTextHandler(&journal, nil)), []string{testToken, testCertKey, "s3cr3tt0k3n00001"})
	script := `printf '[bootstrap-token] Using token: %s\n' "$1"
printf 'kubeadm join controller.home.local:6443 --token %s \\\n' "$1" >&2
printf '\t--certificate-key %s\n' "$2"
printf 'partial line with the secret half s3cr3tt0k3n'; printf '00001 and no newline'`
	s := &Stage{bin: "/bin/sh"}
	out.Mark("kubeadm init --config /var/lib/kubeboot/stages/kubeadm-init/kubeadm.yaml")
	if err := s.run(context.Background(), out, "-c", script, "sh", testToken, testCertKey); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), LogFile)
	if err := out.Save(logFile); err != nil {
		t.Fatal(err)
	}
	saved, _ := os.ReadFile(logFile)
	for what, text := range map[string]string{"journal": journal.String(), "kubeadm.log": string(saved), "output": out.Output()} {
		for _, secret := range []string{testToken, testCertKey, "s3cr3tt0k3n00001"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds a secret:\n%s", what, text)
			}
		}
		if !strings.Contains(text, "Using token: <redacted>") || !strings.Contains(text, "--certificate-key <redacted>") {
			t.Errorf("%s lacks the masked lines:\n%s", what, text)
		}
	}
	if !strings.Contains(string(saved), "=== ") || !strings.Contains(string(saved), "and no newline") {
		t.Errorf("kubeadm.log lacks the command mark or the last partial line:\n%s", saved)
	}
	if info, err := os.Stat(logFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("kubeadm.log mode: %v %v", info, err)
	}
}

func TestOutputIsBounded(t *testing.T) {
	out := newOutput(slog.New(slog.DiscardHandler), nil)
	long := strings.Repeat("x", 3*maxLine)
	for range tailLines + 50 {
		_, _ = out.Write([]byte(long + "\n"))
	}
	_, _ = out.Write([]byte(long)) // no newline: cut at maxLine
	tail := out.Tail(tailLines + 100)
	if len(tail) != tailLines {
		t.Errorf("kept %d lines, want %d", len(tail), tailLines)
	}
	for _, l := range tail {
		if len(l) > maxLine {
			t.Fatalf("kept a line of %d bytes, want at most %d", len(l), maxLine)
		}
	}
}

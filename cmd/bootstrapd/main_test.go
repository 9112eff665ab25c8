package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageErrorsTouchNothing(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"run", "--only", "hostname,netwrk", "--root", root},
		{"plan", "--root", root, "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := dispatch(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("bootstrapd %v: exit %d, want %d\n%s", args, code, exitUsage, stderr.String())
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("usage errors wrote %v", entries)
	}
}

func TestStatusWithoutState(t *testing.T) {
	var stdout, stderr bytes.Buffer
	root := t.TempDir()
	if code := dispatch([]string{"status", "--root", root}, &stdout, &stderr); code != exitFail {
		t.Errorf("exit %d, want %d", code, exitFail)
	}
	if want := "no state under " + filepath.Join(root, "var/lib/kubeboot"); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
}

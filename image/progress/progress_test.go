package progress

import (
	"errors"
	"strings"
	"testing"
)

func TestLinesReportsStartAndEnd(t *testing.T) {
	var b strings.Builder
	r := &Lines{W: &b}
	dl := r.Start("https://example.invalid/kubeadm", 3<<20)
	dl.Write(make([]byte, 3<<20))
	dl.Done(nil)
	build := r.Start("go build kubelet", -1)
	build.Done(errors.New("exit status 1"))
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		"https://example.invalid/kubeadm: started (3.0 MiB)",
		"https://example.invalid/kubeadm: done (3.0 MiB in ",
		"go build kubelet: started",
		"go build kubelet: failed after ",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(got), b.String())
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d: %q, want prefix %q", i, got[i], want[i])
		}
	}
	if !strings.HasSuffix(got[3], "exit status 1") {
		t.Errorf("failure line does not carry the error: %q", got[3])
	}
}

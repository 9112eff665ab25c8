package images

import (
	"strings"
	"testing"
)

func TestFileName(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.k8s.io/coredns/coredns:v1.14.6": "coredns_v1.14.6.tar",
		"registry.k8s.io/pause:3.10.2":            "pause_3.10.2.tar",
	} {
		if got := FileName(ref); got != want {
			t.Errorf("FileName(%s) = %s", ref, got)
		}
	}
}

func TestIndexRoundTrip(t *testing.T) {
	entries := []Entry{
		{Ref: "registry.k8s.io/coredns/coredns:v1.14.6", Digest: "sha256:" + strings.Repeat("1", 64), File: "coredns_v1.14.6.tar"},
		{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:" + strings.Repeat("2", 64), File: "pause_3.10.2.tar"},
	}
	got, err := ParseIndex(strings.NewReader(string(FormatIndex(entries))))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != entries[0] || got[1] != entries[1] {
		t.Fatalf("round trip: %+v", got)
	}
	if got[1].DigestRef() != "registry.k8s.io/pause@sha256:"+strings.Repeat("2", 64) {
		t.Errorf("DigestRef = %s", got[1].DigestRef())
	}
}

func TestParseIndexErrorsNameTheLine(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, c := range []struct{ index, want string }{
		{"", "lists no image"},
		{"registry.k8s.io/pause:3.10.2 " + d, "line 1: want \"<ref> <digest> <file>\", got 2 fields"},
		{"pause:3.10.2 " + d + " pause.tar", "line 1: reference \"pause:3.10.2\": want a full reference"},
		{"registry.k8s.io/pause " + d + " pause.tar", "want a full reference with a tag"},
		{"registry.k8s.io/pause:3.10.2@" + d + " " + d + " pause.tar", "want a full reference with a tag and no digest"},
		{"registry.k8s.io/pause:3.10.2 sha256:abc pause.tar", "digest \"sha256:abc\" is not sha256:<64 hex digits>"},
		{"registry.k8s.io/pause:3.10.2 " + d + " ../pause.tar", "archive \"../pause.tar\" is not a .tar file name"},
		{"registry.k8s.io/pause:3.10.2 " + d + " pause.tar\n\nregistry.k8s.io/pause:3.10.2 " + d + " p.tar", "line 3: registry.k8s.io/pause:3.10.2 is listed again (first on line 1)"},
		{strings.Repeat("#", maxIndexBytes+1), "larger than"},
	} {
		_, err := ParseIndex(strings.NewReader(c.index))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseIndex(%.60q): %v, want %q", c.index, err, c.want)
		}
	}
}

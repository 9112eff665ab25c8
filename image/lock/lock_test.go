package lock

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func hash(c string) string { return strings.Repeat(c, 64) }

func TestWriteReadIsSortedAndStable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "image.lock")
	l := &Lock{Spec: "image.yaml", KubernetesVersion: "v1.37.2"}
	l.SetFile(File{Name: "kubelet", Kind: "binary", SHA256: hash("b"), Size: 2})
	l.SetFile(File{Name: "kubeadm", Kind: "binary", SHA256: hash("a"), Size: 1})
	l.SetFile(File{Name: "kubelet", Kind: "binary", SHA256: hash("c"), Size: 3}) // replaces
	l.SetImage(Image{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:" + hash("d")})
	l.SetImage(Image{Ref: "registry.k8s.io/etcd:3.7.0-0", Digest: "sha256:" + hash("e")})
	if err := l.Write(p); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(p)
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != 2 || got.Files[0].Name != "kubeadm" || got.Files[1].SHA256 != hash("c") || got.Images[0].Ref != "registry.k8s.io/etcd:3.7.0-0" {
		t.Fatalf("read back %+v", got)
	}
	if err := got.Write(p); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(p)
	if string(first) != string(second) {
		t.Fatalf("rewriting changed the file:\n%s\n---\n%s", first, second)
	}
}

func TestReadRejectsBadHashes(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"short sha":  "apiVersion: kubeboot.dev/v1alpha1\nkind: ImageLock\nfiles: [{name: kubeadm, sha256: abc}]\n",
		"bad digest": "apiVersion: kubeboot.dev/v1alpha1\nkind: ImageLock\nimages: [{ref: a/b:c, digest: md5:00}]\n",
		"wrong kind": "apiVersion: kubeboot.dev/v1alpha1\nkind: ImageSpec\n",
		"unknown":    "apiVersion: kubeboot.dev/v1alpha1\nkind: ImageLock\nsurprise: 1\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: want an error naming %s, got %v", name, p, err)
		}
	}
	if _, err := Read(filepath.Join(dir, "absent.lock")); err == nil || !strings.Contains(err.Error(), "kubeboot artifacts lock") {
		t.Errorf("missing lock: error should say how to make it: %v", err)
	}
}

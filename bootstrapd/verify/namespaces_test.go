package verify

import (
	"fmt"
	"os"
	"testing"

	"kubeboot.dev/kubeboot/internal/netnstest"
)

// TestNetNSListingOnce lists a real named namespace once although the
// runtime reports it under /var/run/netns, which on Debian is /run/netns
// through a link (containerd's default directory and ip's are the same).
// The sandbox record stands for what containerd reports on a node; the
// runtime itself is TestContainersAndImagesAsTheReference's (pods on the
// host network).
func TestNetNSListingOnce(t *testing.T) {
	needRoot(t)
	if real, err := os.Readlink("/var/run"); err != nil || (real != "/run" && real != "../run") {
		t.Skipf("/var/run is not a link to /run here (%q, %v)", real, err)
	}
	name := fmt.Sprintf("kbvl%d-%d", os.Getpid()%100000, seq.Add(1))
	netnstest.New(t, name)
	n := prepare(Options{Root: "/"})
	n.cri = &criFacts{sandboxes: []sandbox{{ID: "s", Name: "p", Namespace: "ns", Ready: true, NetNSPath: "/var/run/netns/" + name}}}
	var seen []namedNS
	for _, e := range n.netnsListing() {
		if e.Path == NetNSDir+"/"+name || e.Path == "/var/run/netns/"+name {
			seen = append(seen, e)
		}
	}
	if len(seen) != 1 || seen[0].Err != nil || seen[0].ID.ino == 0 {
		t.Errorf("namespace %s listed as %+v, want once, mounted", name, seen)
	}
}

package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"golang.org/x/sys/unix"
)

// NetNSDir is where `ip netns` and containerd keep named network
// namespaces (/var/run/netns is a link to it).
const NetNSDir = "/run/netns"

// maxNetNS bounds the namespaces listed per directory.
const maxNetNS = 1000

// nsID identifies a network namespace: the nsfs inode `ip netns identify`
// and /proc/PID/ns/net show ("net:[4026532246]").
type nsID struct{ dev, ino uint64 }

func (id nsID) String() string { return fmt.Sprintf("net:[%d]", id.ino) }

func statNS(p string) (nsID, error) {
	info, err := os.Stat(p)
	if err != nil {
		return nsID{}, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return nsID{}, fmt.Errorf("%s: no inode", p)
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// mountedNS reads the namespace a file such as /run/netns/NAME holds, or
// says why it holds none (a file whose bind mount is gone).
func mountedNS(p string) (nsID, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(p, &fs); err != nil {
		return nsID{}, err
	}
	if fs.Type != unix.NSFS_MAGIC {
		return nsID{}, errors.New("not a mounted network namespace")
	}
	return statNS(p)
}

// hostNS is the node's own network namespace.
func (n *node) hostNS() (nsID, error) {
	if n.o.NetNS.IsOpen() {
		var st unix.Stat_t
		if err := unix.Fstat(int(n.o.NetNS), &st); err != nil {
			return nsID{}, fmt.Errorf("the node's network namespace: %w", err)
		}
		return nsID{st.Dev, st.Ino}, nil
	}
	return statNS(n.env.ProcPath("self/ns/net"))
}

// pidNS is the network namespace of a process.
func (n *node) pidNS(pid int) (nsID, error) {
	if pid <= 0 {
		return nsID{}, errors.New("the runtime reported no pid")
	}
	return statNS(n.env.ProcPath(fmt.Sprintf("%d/ns/net", pid)))
}

// namedNS is one entry of `ip netns`.
type namedNS struct {
	Path string // on the node
	ID   nsID
	Err  error
}

// netnsListing lists NetNSDir, as `ip netns` does, and the directories
// holding the sandboxes' namespaces (containerd may keep them elsewhere,
// under its state directory), read in the runtime's view.
func (n *node) netnsListing() []namedNS {
	var out []namedNS
	seen := map[string]bool{} // directories by real path: /var/run/netns is /run/netns
	list := func(dir, inView string) {
		full := filepath.Join(inView, dir)
		if real, err := filepath.EvalSymlinks(full); err == nil {
			full = real
		}
		if seen[full] {
			return
		}
		seen[full] = true
		entries, err := os.ReadDir(full)
		if err != nil {
			return // no namespaces there (yet)
		}
		for _, e := range first(entries, maxNetNS) {
			id, err := mountedNS(filepath.Join(full, e.Name()))
			out = append(out, namedNS{Path: path.Join(dir, e.Name()), ID: id, Err: err})
		}
	}
	list(NetNSDir, n.o.Root)
	if n.cri != nil {
		for _, sb := range n.cri.sandboxes {
			if sb.NetNSPath != "" {
				list(path.Dir(sb.NetNSPath), n.o.RuntimeRoot)
			}
		}
	}
	return out
}

func (n *node) namespaces(context.Context) Section {
	s := Section{Name: "namespaces", Title: "Network namespaces (ip netns; the pod sandboxes' and the containers' namespaces)"}
	host, err := n.hostNS()
	if err != nil {
		s.fail("the node's network namespace", "readable", err.Error())
		return s
	}
	names := map[nsID]string{}
	for _, e := range n.netnsListing() {
		if e.Err != nil {
			s.found("%s  (%v)", e.Path, e.Err)
			continue
		}
		s.found("%s  %s", e.Path, e.ID)
		if _, ok := names[e.ID]; !ok {
			names[e.ID] = path.Base(e.Path)
		}
	}
	identify := func(id nsID) string {
		if id == host {
			return "host"
		}
		if name, ok := names[id]; ok {
			return name + " " + id.String()
		}
		return id.String() + " (not listed by ip netns)"
	}
	if !n.runtimeAnswers(&s) {
		return s
	}

	running := slices.DeleteFunc(slices.Clone(n.cri.sandboxes), func(sb sandbox) bool { return !sb.Ready })
	hostNet := 0
	for _, sb := range running {
		if sb.HostNetwork {
			hostNet++
		}
	}
	found := fmt.Sprintf("%d running, %d of them on the host network", len(running), hostNet)
	s.check("running pod sandboxes", len(running) > 0, "at least one (kube-proxy runs on every node)", found)

	// The namespace each running sandbox is in, by sandbox ID.
	sandboxNS := map[string]nsID{}
	owner := map[nsID]string{} // namespace -> the first pod found in it
	for _, sb := range running {
		id, err := n.pidNS(sb.PID)
		if err == nil {
			sandboxNS[sb.ID] = id
		}
		where := "?"
		if err == nil {
			where = identify(id)
		}
		if sb.HostNetwork {
			s.found("pod %s  sandbox %s  hostNetwork  pid %d: %s", sb.pod(), short(sb.ID), sb.PID, where)
			name := fmt.Sprintf("pod %s (hostNetwork) is in the node's network namespace", sb.pod())
			switch {
			case err != nil:
				s.fail(name, "host", err.Error())
			default:
				s.check(name, id == host, "host", where)
			}
			continue
		}
		s.found("pod %s  sandbox %s  netns %s  pid %d: %s", sb.pod(), short(sb.ID), orNone(sb.NetNSPath), sb.PID, where)
		name := fmt.Sprintf("pod %s has its own network namespace", sb.pod())
		expected := "a namespace of its own, mounted at the netns path the runtime reports"
		switch {
		case err != nil:
			s.fail(name, expected, err.Error())
		case sb.NetNSPath == "":
			s.fail(name, expected, "the runtime reports no netns path")
		case id == host:
			s.fail(name, expected, "the node's own namespace")
		case owner[id] != "":
			s.fail(name, expected, fmt.Sprintf("%s, shared with pod %s", identify(id), owner[id]))
		default:
			mounted, merr := mountedNS(filepath.Join(n.o.RuntimeRoot, sb.NetNSPath))
			switch {
			case merr != nil:
				s.fail(name, expected, fmt.Sprintf("%s: %v", sb.NetNSPath, merr))
			case mounted != id:
				s.fail(name, expected, fmt.Sprintf("%s holds %s, the pod's process is in %s", sb.NetNSPath, mounted, id))
			default:
				s.pass(name, expected, identify(id))
			}
		}
		if err == nil && owner[id] == "" {
			owner[id] = sb.pod()
		}
	}

	// ip netns identify $(crictl inspect C | jq .info.pid), per container.
	bySandbox := map[string]sandbox{}
	for _, sb := range running {
		bySandbox[sb.ID] = sb
	}
	for _, c := range n.cri.containers {
		sb, ok := bySandbox[c.SandboxID]
		if !ok || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		name := fmt.Sprintf("container %s (pod %s) is in its pod's network namespace", c.Name, sb.pod())
		want, wok := sandboxNS[sb.ID]
		expected := "its pod's"
		if wok {
			expected = identify(want)
		}
		id, err := n.pidNS(c.PID)
		if err != nil {
			s.found("container %s %s (pod %s) pid %d: %v", short(c.ID), c.Name, sb.pod(), c.PID, err)
			s.fail(name, expected, err.Error())
			continue
		}
		s.found("container %s %s (pod %s) pid %d: %s", short(c.ID), c.Name, sb.pod(), c.PID, identify(id))
		s.check(name, wok && id == want, expected, identify(id))
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

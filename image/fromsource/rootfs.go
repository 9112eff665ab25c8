package fromsource

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/image/aptmirror"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/oci"
)

// Debian rootfs tarballs images take files from, by the name part of their
// lock entry (rootfs-<suite>-<name>) and their packages.
const (
	// userlandRootfs holds the iptables (nft backend), nft and conntrack
	// userland of the kube-proxy and flannel images.
	userlandRootfs = "kube-proxy-userland"
	// busyboxRootfs holds Debian's static BusyBox for the test image.
	busyboxRootfs = "busybox"
)

var rootfsPackages = map[string][]string{
	userlandRootfs: {"conntrack", "iptables", "nftables"},
	busyboxRootfs:  {"busybox-static"},
}

// RootfsKey names an mmdebstrap tarball by what determines it. The tar
// itself lives in the content-addressed cache; <cache>/rootfs/<key>.sha256
// holds its hash so later runs (and the image builder) find it.
func RootfsKey(suite, mirror, variant string, packages []string) string {
	p := append([]string{}, packages...)
	sort.Strings(p)
	h := sha256.Sum256([]byte(strings.Join([]string{suite, mirror, variant, strings.Join(p, ",")}, "\n")))
	return suite + "-" + variant + "-" + hex.EncodeToString(h[:])[:16]
}

// debianRootfs makes (or reuses) an mmdebstrap tarball of packages and
// their dependencies, unpacked but not configured (variant extract): only
// files are taken from it, nothing runs inside it. An empty specMirror
// means the build machine's own Debian mirror; the cache key holds the
// resolved mirror, the lock's source text names only an explicit one.
func (b *Builder) debianRootfs(ctx context.Context, suite, specMirror, name string) (lock.File, error) {
	const variant = "extract"
	packages := rootfsPackages[name]
	mirror, fromHost, err := aptmirror.Resolve(specMirror)
	if err != nil {
		return lock.File{}, fmt.Errorf("%s rootfs: base.mirror is not set: %w", name, err)
	}
	key := RootfsKey(suite, mirror, variant, packages)
	index := filepath.Join(b.Cache.Dir, "rootfs", key+".sha256")
	source := fmt.Sprintf("mmdebstrap --variant=%s --include=%s %s %s", variant, strings.Join(packages, ","), suite, mirror)
	if fromHost {
		source = fmt.Sprintf("mmdebstrap --variant=%s --include=%s %s (build host's Debian mirror)", variant, strings.Join(packages, ","), suite)
	}
	file := lock.File{Name: rootfsName(suite, name), Kind: lock.KindRootfs, Version: suite, Source: source}
	if data, err := os.ReadFile(index); err == nil {
		sha := strings.TrimSpace(string(data))
		if b.Cache.HasFile(sha) {
			st, err := os.Stat(b.Cache.FilePath(sha))
			if err == nil {
				file.SHA256, file.Size = sha, st.Size()
				return file, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(index), 0o755); err != nil {
		return lock.File{}, err
	}
	tmp := filepath.Join(b.Cache.TempDir(), key+".tar")
	defer os.Remove(tmp)
	env := []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(b.epoch.Unix(), 10)}
	if err := b.run(ctx, b.Cache.TempDir(), "mmdebstrap "+suite+" ("+strings.Join(packages, ",")+")", env,
		"mmdebstrap", "--variant="+variant, "--include="+strings.Join(packages, ","), suite, tmp, mirror); err != nil {
		return lock.File{}, fmt.Errorf("%w (mmdebstrap needs root or user namespaces and the Debian mirror %s)", err, mirror)
	}
	sha, _, err := b.Cache.PutFile(tmp, "")
	if err != nil {
		return lock.File{}, err
	}
	if err := os.WriteFile(index, []byte(sha+"\n"), 0o644); err != nil {
		return lock.File{}, err
	}
	st, err := os.Stat(b.Cache.FilePath(sha))
	if err != nil {
		return lock.File{}, err
	}
	file.SHA256, file.Size = sha, st.Size()
	return file, nil
}

func rootfsName(suite, name string) string { return "rootfs-" + suite + "-" + name }

// tarFS is a rootfs tarball held in memory, by clean relative path.
type tarFS map[string]tarEntry

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

func readTarFS(p string) (tarFS, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fs := tarFS{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		e := tarEntry{hdr: hdr}
		if hdr.Typeflag == tar.TypeReg {
			if e.data, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", p, name, err)
			}
		}
		fs[name] = e
	}
}

// libDirs is the dynamic loader's search path on Debian amd64.
var libDirs = []string{"usr/lib/x86_64-linux-gnu", "usr/lib", "lib/x86_64-linux-gnu", "lib", "usr/lib64"}

// closure collects files into the image: each symlink on the way and the
// final file; ELF files pull in their DT_NEEDED libraries.
type closure struct {
	what    string // the rootfs's name, for errors
	fs      tarFS
	entries map[string]oci.Entry
}

// add includes p (relative) and returns the regular file it resolves to.
func (c *closure) add(p string) error {
	for hops := 0; hops < 16; hops++ {
		e, ok := c.fs[p]
		if !ok {
			return fmt.Errorf("%s: %s is not in the Debian rootfs", c.what, p)
		}
		switch e.hdr.Typeflag {
		case tar.TypeSymlink:
			c.entries["/"+p] = oci.Entry{Path: "/" + p, Link: e.hdr.Linkname}
			target := e.hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = path.Clean(strings.TrimPrefix(target, "/"))
			continue
		case tar.TypeReg:
			if _, done := c.entries["/"+p]; done {
				return nil
			}
			c.entries["/"+p] = oci.Entry{Path: "/" + p, Data: e.data, Mode: os.FileMode(e.hdr.Mode).Perm()}
			return c.addNeeded(p, e.data)
		default:
			return fmt.Errorf("%s: %s is neither a file nor a symlink", c.what, p)
		}
	}
	return fmt.Errorf("%s: too many symlinks at %s", c.what, p)
}

func (c *closure) addNeeded(p string, data []byte) error {
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %s: %w", c.what, p, err)
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return nil // static, or no dynamic section
	}
	for _, lib := range needed {
		found := false
		for _, d := range libDirs {
			if _, ok := c.fs[path.Join(d, lib)]; ok {
				if err := c.add(path.Join(d, lib)); err != nil {
					return err
				}
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: %s needs %s, not found in the rootfs", c.what, p, lib)
		}
	}
	return nil
}

// kubeProxyUserland picks iptables (nft backend, with the iptables and
// ip6tables names kube-proxy calls), nft, conntrack, the xtables
// extensions and every shared library they need from a Debian rootfs tar.
func kubeProxyUserland(rootfsTar string) ([]oci.Entry, error) {
	fs, err := readTarFS(rootfsTar)
	if err != nil {
		return nil, err
	}
	c := &closure{what: "kube-proxy userland", fs: fs, entries: map[string]oci.Entry{}}
	roots := []string{"usr/sbin/xtables-nft-multi", "usr/sbin/nft", "usr/sbin/conntrack", "usr/lib64/ld-linux-x86-64.so.2"}
	for name := range fs {
		if strings.HasPrefix(name, "usr/lib/x86_64-linux-gnu/xtables/") && strings.HasSuffix(name, ".so") {
			roots = append(roots, name)
		}
	}
	sort.Strings(roots)
	for _, r := range roots {
		if err := c.add(r); err != nil {
			return nil, err
		}
	}
	// The Debian packages set these up with update-alternatives in
	// postinst, which the extract variant does not run.
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore"} {
		c.entries["/usr/sbin/"+n] = oci.Entry{Path: "/usr/sbin/" + n, Link: "xtables-nft-multi"}
	}
	// merged /usr: the ELF interpreter is /lib64/ld-linux-x86-64.so.2.
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		c.entries["/"+d] = oci.Entry{Path: "/" + d, Link: "usr/" + d}
	}
	c.entries["/usr/bin"] = oci.Entry{Path: "/usr/bin", Dir: true}
	c.entries["/run"] = oci.Entry{Path: "/run", Dir: true}
	return c.list(), nil
}

func (c *closure) list() []oci.Entry {
	out := make([]oci.Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	return out
}

// busyboxApplets are the commands the test image links to BusyBox: what
// the end-to-end tests run in a pod (reach another pod, resolve a name,
// serve and fetch HTTP, wait) and what a person debugging needs.
var busyboxApplets = []string{"cat", "echo", "env", "hostname", "httpd", "ip", "ls", "nc", "nslookup",
	"ping", "ping6", "ps", "sh", "sleep", "true", "wget"}

// busyboxImage takes Debian's static BusyBox from the rootfs tar as
// /bin/busybox, links the applets to it, and checks it is the version the
// image is tagged with (its banner, "BusyBox v1.37.0 ...", is in the
// binary), so the tag cannot drift from the content.
func busyboxImage(rootfsTar, tag string) ([]oci.Entry, error) {
	fs, err := readTarFS(rootfsTar)
	if err != nil {
		return nil, err
	}
	c := &closure{what: "busybox", fs: fs, entries: map[string]oci.Entry{}}
	if err := c.add("usr/bin/busybox"); err != nil {
		return nil, err
	}
	bin := c.entries["/usr/bin/busybox"]
	if len(c.entries) != 1 || bin.Data == nil {
		return nil, fmt.Errorf("busybox: /usr/bin/busybox of busybox-static is not one static file")
	}
	if !bytes.Contains(bin.Data, []byte("BusyBox v"+tag+" ")) {
		return nil, fmt.Errorf("busybox: the image is tagged %s but usr/bin/busybox is another version (no \"BusyBox v%s \" banner)", tag, tag)
	}
	out := []oci.Entry{{Path: "/bin/busybox", Data: bin.Data, Mode: 0o755}}
	for _, a := range busyboxApplets {
		out = append(out, oci.Entry{Path: "/bin/" + a, Link: "busybox"})
	}
	return out, nil
}

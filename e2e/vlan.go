package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// VLANPort joins one VLAN of a trunk bridge to an access bridge, as a
// switch port would: frames tagged with the VLAN id that the trunk bridge
// floods or forwards to it lose their tag and enter the access bridge;
// frames from the access bridge get the tag and enter the trunk bridge.
// Untagged and other VLANs' frames from the trunk are dropped.
//
// It exists because this machine's kernel has neither 8021q nor bridge
// VLAN filtering (CONFIG_VLAN_8021Q and CONFIG_BRIDGE_VLAN_FILTERING are
// off), so the lab cannot terminate a VLAN on a bridge or a VLAN link. The
// guests' kernel has both; the lab only has to carry the tag. The two sides
// are tap devices the test process holds, ports of the two bridges.
type VLANPort struct {
	ID            uint16
	Errs          chan error // a side that stopped on an error
	trunk, access *os.File
	wg            sync.WaitGroup
	closeOnce     sync.Once
}

// tagged returns frame with an 802.1Q tag (TPID 0x8100, priority 0)
// inserted after the source MAC.
func tagged(frame []byte, id uint16) ([]byte, bool) {
	if len(frame) < 14 {
		return nil, false
	}
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, 0x8100)
	out = binary.BigEndian.AppendUint16(out, id&0x0fff)
	return append(out, frame[12:]...), true
}

// untagged returns frame without its 802.1Q tag when the tag carries id.
func untagged(frame []byte, id uint16) ([]byte, bool) {
	if len(frame) < 18 || binary.BigEndian.Uint16(frame[12:14]) != 0x8100 {
		return nil, false
	}
	if binary.BigEndian.Uint16(frame[14:16])&0x0fff != id {
		return nil, false
	}
	out := make([]byte, 0, len(frame)-4)
	out = append(out, frame[:12]...)
	return append(out, frame[16:]...), true
}

// openTap creates the tap device name in the named network namespace and
// returns its file: what the lab reads from it is what the namespace's
// kernel sends out of the tap (a bridge forwarding to it), what it writes
// enters the namespace as received on the tap.
func openTap(nsName, name string) (*os.File, error) {
	var fd int
	err := inNamespace(nsName, func() error {
		var err error
		if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s in %s: %w", name, nsName, err)
	}
	return os.NewFile(uintptr(fd), "tap "+name), nil
}

// newVLANPort opens the taps trunk and access in the namespace; the
// caller makes them ports of the bridges and sets them up, then calls
// Start.
func newVLANPort(nsName string, id uint16, trunk, access string) (*VLANPort, error) {
	t, err := openTap(nsName, trunk)
	if err != nil {
		return nil, err
	}
	a, err := openTap(nsName, access)
	if err != nil {
		t.Close()
		return nil, err
	}
	return &VLANPort{ID: id, trunk: t, access: a, Errs: make(chan error, 2)}, nil
}

// Start copies frames both ways until Close.
func (v *VLANPort) Start() {
	v.wg.Add(2)
	go v.copy(v.trunk, v.access, func(f []byte) ([]byte, bool) { return untagged(f, v.ID) })
	go v.copy(v.access, v.trunk, func(f []byte) ([]byte, bool) { return tagged(f, v.ID) })
}

func (v *VLANPort) copy(from, to *os.File, conv func([]byte) ([]byte, bool)) {
	defer v.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				v.Errs <- fmt.Errorf("VLAN %d port: reading %s: %w", v.ID, from.Name(), err)
			}
			return
		}
		out, ok := conv(buf[:n])
		if !ok {
			continue
		}
		if _, err := to.Write(out); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// A full queue on the other side drops the frame, as a
			// switch would; the guest retransmits.
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EIO) {
				continue
			}
			v.Errs <- fmt.Errorf("VLAN %d port: writing %s: %w", v.ID, to.Name(), err)
			return
		}
	}
}

// Close stops the copying and removes both taps (they are not persistent:
// they go with their file).
func (v *VLANPort) Close() error {
	var err error
	v.closeOnce.Do(func() {
		err = errors.Join(v.trunk.Close(), v.access.Close())
		v.wg.Wait()
	})
	return err
}

package network

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetNS runs f on an OS thread switched into ns, for what netlink
// handles cannot do: sockets for DHCP and per-namespace sysctls are bound
// to the namespace of the thread that opens them. netns.None() runs f
// where we are. f runs on its own goroutine so that, should switching back
// fail, the goroutine ends with its thread locked and the runtime retires
// the thread instead of reusing it in the wrong namespace.
func inNetNS(ns netns.NsHandle, f func() error) error {
	if !ns.IsOpen() {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("read current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			done <- fmt.Errorf("return to the original network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

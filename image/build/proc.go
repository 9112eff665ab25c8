package build

import (
	"os"
	"syscall"
	"time"
)

var timeNow = time.Now

// processAlive reports whether pid exists (signal 0 probes without sending).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscall.Signal(0)) == nil
}

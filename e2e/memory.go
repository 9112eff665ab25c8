package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MemorySampler reads the host's memory and every running QEMU's resident
// set every sampleEvery, and keeps the peaks of the current window (a
// scenario): what the lab needed, measured, not estimated.
type MemorySampler struct {
	mu     sync.Mutex
	pids   map[string]int // VM name -> QEMU pid, while it runs
	win    MemoryWindow
	stop   chan struct{}
	done   chan struct{}
	stopMu sync.Once
}

// MemoryWindow is what one window saw, in MiB.
type MemoryWindow struct {
	// HostUsedAtStartMiB and HostPeakUsedMiB are MemTotal - MemAvailable
	// at the start and at the worst moment (other users of the machine
	// included).
	HostTotalMiB       int `json:"hostTotalMiB"`
	HostUsedAtStartMiB int `json:"hostUsedAtStartMiB"`
	HostPeakUsedMiB    int `json:"hostPeakUsedMiB"`
	// QEMUPeakRSSMiB is each VM's highest resident set; QEMUSumPeakMiB
	// the highest sum over the VMs running at one moment.
	QEMUPeakRSSMiB map[string]int `json:"qemuPeakRSSMiB"`
	QEMUSumPeakMiB int            `json:"qemuSumPeakMiB"`
}

const sampleEvery = 2 * time.Second

func startMemorySampler() *MemorySampler {
	m := &MemorySampler{pids: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.Window()
	go func() {
		defer close(m.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

// Track adds a running QEMU; Untrack removes it (after its last sample).
func (m *MemorySampler) Track(vm string, pid int) {
	m.mu.Lock()
	m.pids[vm] = pid
	m.mu.Unlock()
}

// Untrack samples the VM a last time and forgets it.
func (m *MemorySampler) Untrack(vm string) {
	m.sample()
	m.mu.Lock()
	delete(m.pids, vm)
	m.mu.Unlock()
}

func (m *MemorySampler) sample() {
	total, avail, err := meminfo()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		m.win.HostTotalMiB = total
		m.win.HostPeakUsedMiB = max(m.win.HostPeakUsedMiB, total-avail)
	}
	sum := 0
	for vm, pid := range m.pids {
		rss, err := rssMiB(pid)
		if err != nil {
			continue
		}
		sum += rss
		m.win.QEMUPeakRSSMiB[vm] = max(m.win.QEMUPeakRSSMiB[vm], rss)
	}
	m.win.QEMUSumPeakMiB = max(m.win.QEMUSumPeakMiB, sum)
}

// Window returns what the window since the last call saw and starts a new
// one.
func (m *MemorySampler) Window() MemoryWindow {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.win
	total, avail, _ := meminfo()
	m.win = MemoryWindow{HostTotalMiB: total, HostUsedAtStartMiB: total - avail, HostPeakUsedMiB: total - avail, QEMUPeakRSSMiB: map[string]int{}}
	return w
}

// Stop ends the sampling.
func (m *MemorySampler) Stop() {
	m.stopMu.Do(func() { close(m.stop); <-m.done })
}

// meminfo returns MemTotal and MemAvailable in MiB.
func meminfo() (total, avail int, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = kb >> 10
		case "MemAvailable":
			avail = kb >> 10
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("/proc/meminfo has no MemTotal")
	}
	return total, avail, s.Err()
}

// rssMiB is the resident set of pid.
func rssMiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb >> 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

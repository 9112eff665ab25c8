package main

// Issue 12, unreachable dependencies: the server of a kubeboot.config= URL
// down, failing, refusing, answering with a body that fails its sha256 pin
// or is too large, and a node with no source at all (no CIDATA volume, no
// URL, nothing baked). Each must end like a hostile config (refused): a
// clear error, the failed marker, status saying so, nothing applied, the
// namespaces unchanged, memory and time bounded. The server is real and
// listens on the node namespace's loopback, where bootstrapd runs.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

// fetchBudget bounds a fetch that never succeeds: 6 attempts with 25 s of
// backoff between them (package source), plus room for a loaded machine.
const fetchBudget = 2 * time.Minute

func TestConfigServerFaults(t *testing.T) {
	bin := binary(t)
	needRootAndTools(t)
	n := newNode(t)
	kernelBefore := fmt.Sprint(n.kernel())

	body := []byte(hostileHead)
	sum := sha256.Sum256(body)
	mux := http.NewServeMux()
	mux.HandleFunc("/starting", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/config.yaml", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	mux.HandleFunc("/large.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("# padding\n"), machineconfig.MaxSize/10+1))
	})
	var up, down net.Listener
	inNS(t, n.ns, func() {
		var err error
		if up, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		// A port nobody listens on: the server is down.
		if down, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	down.Close()
	srv := &http.Server{Handler: mux}
	go srv.Serve(up)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + up.Addr().String()

	cmdline := func(params string) func(*testing.T, string) []string {
		return func(t *testing.T, root string) []string {
			if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte("BOOT_IMAGE=/vmlinuz ro "+params+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return nil
		}
	}
	wrongPin := strings.Repeat("0", 64)
	inputs := []hostileInput{
		{"server down", cmdline("kubeboot.config=http://" + down.Addr().String() + "/m.yaml"),
			"connection refused (gave up after 6 attempts"},
		{"server answers 503", cmdline("kubeboot.config=" + base + "/starting"),
			"/starting answered 503 Service Unavailable (gave up after 6 attempts"},
		{"server answers 404", cmdline("kubeboot.config=" + base + "/missing.yaml"),
			"/missing.yaml answered 404 Not Found (not retried"},
		{"body fails its sha256 pin", cmdline("kubeboot.config=" + base + "/config.yaml kubeboot.config.sha256=sha256:" + wrongPin),
			"/config.yaml: sha256 is " + hex.EncodeToString(sum[:]) + " but kubeboot.config.sha256 pins " + wrongPin},
		{"body over 128 KiB", cmdline("kubeboot.config=" + base + "/large.yaml"),
			"/large.yaml: the config is larger than 128 KiB…(not retried"},
		{"no CIDATA volume, no URL, nothing baked", cmdline(""),
			"no machine config found: tried --config, kubeboot.config= on the kernel command line, a NoCloud volume labelled CIDATA/cidata and /usr/share/kubeboot/machine.yaml"},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			start := time.Now()
			refused(t, bin, n, kernelBefore, nil, in)
			if d := time.Since(start); d > fetchBudget {
				t.Errorf("bootstrapd took %s to give up, over %s", d.Round(time.Second), fetchBudget)
			}
		})
	}
}

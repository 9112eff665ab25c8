package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/image/cidata"
	"kubeboot.dev/kubeboot/machineconfig"
)

const cidataUsage = `usage: kubeboot cidata -o seed.iso|seed.img --config FILE [flags]

Makes a NoCloud seed volume labelled CIDATA for a VM: user-data is the
machine config, meta-data has the instance id and the hostname, and
network-config (netplan v2) is added when given. The secrets bundle the
config names (credentials.secretsBundle, a file name next to the config)
goes next to user-data, reduced to what the role needs: a worker's volume
gets only the CA certificate and the token. .iso gives ISO9660, .img gives
FAT. Everything is validated before the volume is written; the volume is
0600 (it holds join credentials).

flags:`

func runCIDATA(args []string) int {
	fs := flag.NewFlagSet("kubeboot cidata", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, cidataUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "volume to write (.iso or .img)")
	config := fs.String("config", "", "machine config (becomes user-data)")
	network := fs.String("network-config", "", "netplan v2 network config (replaces the config's network section)")
	instanceID := fs.String("instance-id", "", "NoCloud instance id (default: derived from the files' contents)")
	var extra multiFlag
	fs.Var(&extra, "file", "extra file put next to user-data under its base name (repeatable); the secrets bundle the config names is added without it")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *out == "" || *config == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	format, err := cidata.FormatFor(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitUsage
	}
	userData, err := os.ReadFile(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	carrier := &machineconfig.Carrier{Dir: filepath.Dir(*config), Tool: "kubeboot cidata", Reserved: []string{"user-data", "meta-data", "network-config"}}
	cfg, err := machineconfig.ParseWithFiles(*config, userData, carrier.Read)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFail
	}
	files := map[string][]byte{"user-data": userData}
	for _, name := range carrier.Names {
		// The role's share only: a worker's volume holds no private key.
		files[name] = clustersecrets.Marshal(cfg.Kubernetes.Credentials.Bundle)
	}
	if *network != "" {
		data, err := os.ReadFile(*network)
		if err == nil {
			_, err = machineconfig.ParseNetplan(*network, data)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubeboot cidata: --network-config:", err)
			return exitFail
		}
		files["network-config"] = data
	}
	for _, f := range extra {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubeboot cidata: --file:", err)
			return exitFail
		}
		name := filepath.Base(f)
		if _, dup := files[name]; dup {
			fmt.Fprintf(os.Stderr, "kubeboot cidata: --file %s: the volume already has a %s\n", f, name)
			return exitUsage
		}
		files[name] = data
	}
	sum := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(sum, "%s %d\n", name, len(files[name]))
		sum.Write(files[name])
	}
	if *instanceID == "" {
		// A new id when the contents change: cloud-init treats a new
		// instance id as a new machine.
		*instanceID = "kubeboot-" + hex.EncodeToString(sum.Sum(nil))[:16]
	}
	files["meta-data"] = []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", strconv.Quote(*instanceID), strconv.Quote(cfg.Hostname)))
	epoch := int64(defaultEpoch)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= defaultEpoch {
			epoch = n
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cidata.Write(ctx, *out, files, cidata.Options{Format: format, SourceDateEpoch: epoch}); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; nothing was written")
		}
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	fmt.Printf("wrote %s (%s, label %s, instance-id %s)\n", *out, format, cidata.Label, *instanceID)
	return exitOK
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

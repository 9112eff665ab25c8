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
	files, id, err := seedFiles("kubeboot cidata", *config, *network, extra, *instanceID)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFail
	}
	epoch := sourceDateEpoch()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cidata.Write(ctx, *out, files, cidata.Options{Format: format, SourceDateEpoch: epoch}); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; nothing was written")
		}
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	fmt.Printf("wrote %s (%s, label %s, instance-id %s)\n", *out, format, cidata.Label, id)
	return exitOK
}

// seedFiles are the files of a NoCloud volume for the config at config,
// checked as kubeboot cidata checks them: the config is validated, the
// secrets bundle it names is carried (the role's share only), the
// network-config is validated, extra files may not replace one of these.
// tool prefixes the messages.
func seedFiles(tool, config, network string, extra []string, instanceID string) (map[string][]byte, string, error) {
	userData, err := os.ReadFile(config)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", tool, err)
	}
	carrier := &machineconfig.Carrier{Dir: filepath.Dir(config), Tool: tool, Reserved: []string{"user-data", "meta-data", "network-config"}}
	cfg, err := machineconfig.ParseWithFiles(config, userData, carrier.Read)
	if err != nil {
		return nil, "", err
	}
	files := map[string][]byte{"user-data": userData}
	for _, name := range carrier.Names {
		// The role's share only: a worker's volume holds no private key.
		files[name] = clustersecrets.Marshal(cfg.Kubernetes.Credentials.Bundle)
	}
	if network != "" {
		data, err := os.ReadFile(network)
		if err == nil {
			_, err = machineconfig.ParseNetplan(network, data)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: --network-config: %w", tool, err)
		}
		files["network-config"] = data
	}
	for _, f := range extra {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("%s: --file: %w", tool, err)
		}
		name := filepath.Base(f)
		if _, dup := files[name]; dup {
			return nil, "", fmt.Errorf("%s: --file %s: the volume already has a %s", tool, f, name)
		}
		files[name] = data
	}
	sum := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(sum, "%s %d\n", name, len(files[name]))
		sum.Write(files[name])
	}
	if instanceID == "" {
		// A new id when the contents change: cloud-init treats a new
		// instance id as a new machine.
		instanceID = "kubeboot-" + hex.EncodeToString(sum.Sum(nil))[:16]
	}
	files["meta-data"] = []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", strconv.Quote(instanceID), strconv.Quote(cfg.Hostname)))
	return files, instanceID, nil
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH when valid, else defaultEpoch.
func sourceDateEpoch() int64 {
	epoch := int64(defaultEpoch)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= defaultEpoch {
			epoch = n
		}
	}
	return epoch
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"kubeboot.dev/kubeboot/image/cidata"
	"kubeboot.dev/kubeboot/machineconfig"
)

const cidataUsage = `usage: kubeboot cidata -o seed.iso|seed.img --config FILE [flags]

Makes a NoCloud seed volume labelled CIDATA for a VM: user-data is the
machine config, meta-data has the instance id and the hostname, and
network-config (netplan v2) is added when given. .iso gives ISO9660, .img
gives FAT. Everything is validated before the volume is written.

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
	fs.Var(&extra, "file", "extra file put next to user-data under its base name, e.g. a secrets bundle (repeatable)")
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
	cfg, err := machineconfig.Load(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	userData, err := os.ReadFile(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	files := map[string][]byte{"user-data": userData}
	sum := sha256.New()
	sum.Write(userData)
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
		sum.Write(data)
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
		sum.Write(data)
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
	if err := cidata.Write(*out, files, cidata.Options{Format: format, SourceDateEpoch: epoch}); err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot cidata:", err)
		return exitFail
	}
	fmt.Printf("wrote %s (%s, label %s, instance-id %s)\n", *out, format, cidata.Label, *instanceID)
	return exitOK
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

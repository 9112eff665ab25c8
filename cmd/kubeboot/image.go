package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"

	"kubeboot.dev/kubeboot/image/build"
	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/progress"
)

const imageUsage = `usage: kubeboot image build --spec FILE -o OUT.raw [flags]

Builds a node disk image (GPT: ESP with systemd-boot, ROOT-A squashfs,
ROOT-B reserved; STATE is made on first boot) from the spec's pinned
inputs. With output.formats containing qcow2, OUT.qcow2 is written too.
Timestamps come from SOURCE_DATE_EPOCH (default 315532800, 1980-01-01,
the earliest FAT time); the same inputs give byte-identical images.

flags:`

// defaultEpoch is 1980-01-01T00:00:00Z: FAT cannot store earlier times.
const defaultEpoch = 315532800

func runImage(args []string) int {
	if len(args) == 0 || args[0] != "build" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(os.Stderr, imageUsage)
			return exitOK
		}
		fmt.Fprintln(os.Stderr, imageUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("kubeboot image build", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, imageUsage); fs.PrintDefaults() }
	specPath := fs.String("spec", "configs/image.yaml", "image spec")
	out := fs.String("o", "out/node.raw", "raw disk image to write")
	machineConfig := fs.String("machine-config", "", "bake this machine config into the image (per-node image)")
	cacheDir := fs.String("cache", "", "kubeboot cache directory (default $XDG_CACHE_HOME/kubeboot)")
	bootstrapd := fs.String("bootstrapd", "", "bootstrapd binary (default: bootstrapd next to this kubeboot)")
	osOnly := fs.Bool("os-only", false, "leave out the Kubernetes artifacts (boot tests of the OS layout)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kubeboot image build: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *cacheDir == "" {
		d, err := fetch.DefaultDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubeboot image build:", err)
			return exitFail
		}
		*cacheDir = d
	}
	if *bootstrapd == "" {
		if exe, err := os.Executable(); err == nil {
			*bootstrapd = filepath.Join(filepath.Dir(exe), "bootstrapd")
		}
	}
	epoch := int64(defaultEpoch)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < defaultEpoch {
			fmt.Fprintf(os.Stderr, "kubeboot image build: SOURCE_DATE_EPOCH=%q must be a Unix time from 1980-01-01 (%d) on\n", v, defaultEpoch)
			return exitUsage
		}
		epoch = n
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "kubeboot image build: must run as root (mmdebstrap --mode=root, chroot, mount namespaces)")
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := build.Build(ctx, build.Options{
		SpecPath: *specPath, CacheDir: *cacheDir, Output: *out, Bootstrapd: *bootstrapd,
		MachineConfig: *machineConfig, OSOnly: *osOnly, SourceDateEpoch: epoch,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Progress: progress.For(os.Stderr),
	})
	printSteps(res)
	if err != nil && ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "kubeboot image build: interrupted (%v); no image written, the steps that finished stay cached\n", err)
		return exitFail
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot image build:", err)
		return exitFail
	}
	fmt.Printf("wrote %s", res.Raw)
	if res.QCOW2 != "" {
		fmt.Printf(" and %s", res.QCOW2)
	}
	if res.Zst != "" {
		fmt.Printf(" and %s", res.Zst)
	}
	fmt.Printf(" (root squashfs %.1f MiB)\n", float64(res.RootSize)/(1<<20))
	return exitOK
}

func printSteps(res *build.Result) {
	if res == nil || len(res.Steps) == 0 {
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tCACHED\tSECONDS")
	for _, s := range res.Steps {
		fmt.Fprintf(tw, "%s\t%v\t%.1f\n", s.Name, s.Cached, s.Duration.Seconds())
	}
	tw.Flush()
}

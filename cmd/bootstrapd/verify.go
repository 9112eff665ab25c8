package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/bootstrapd/verify"
)

// verifyTimeout bounds a whole verify run: each request has its own 30 s
// limit; a node answering nothing still gets its report in this time.
const verifyTimeout = 3 * time.Minute

// cmdVerify checks the node against its config and the reference's
// environment check (bootstrapd/verify): exit 0 when every check holds, 1
// when one does not or the config cannot be read, 2 on usage errors.
func cmdVerify(args []string, stdout, stderr io.Writer) int {
	f := newFlags("verify", stderr, false)
	f.fs.StringVar(&f.config, "config", "", "machine config file; default: the sources run reads, in order (kernel command line, NoCloud CIDATA, /usr/share/kubeboot/machine.yaml)")
	asJSON := f.fs.Bool("json", false, "print the report as JSON")
	if !f.parse(args) {
		return exitUsage
	}
	ctx, cancel := signalContext()
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, verifyTimeout)
	defer cancel()

	// Only warnings: the report is the output.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := source.Load(ctx, source.Options{Root: f.root, ConfigPath: f.config, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "bootstrapd: verify: %s\n", show(err.Error()))
		return exitFail
	}
	report := verify.Run(ctx, verify.Options{Root: f.root, NetNS: netns.None(), Config: res.Config, Source: res.Source, Log: log})
	write := report.WriteText
	if *asJSON {
		write = report.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "bootstrapd: verify: %v\n", err)
		return exitFail
	}
	if !report.OK {
		return exitFail
	}
	return exitOK
}

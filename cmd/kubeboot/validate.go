package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"kubeboot.dev/kubeboot/machineconfig"
)

func runValidate(args []string) int {
	return validateFiles(args, os.Stdout, os.Stderr)
}

// validateFiles checks every file and prints every problem of every file,
// so one run shows all there is to fix. Valid files get "FILE: ok".
func validateFiles(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kubeboot validate FILE...\n\nChecks machine configs and the secrets bundles they name; exit status 0 when all are valid, 1 when one is not, 2 on usage errors.")
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	status := exitOK
	for _, file := range fs.Args() {
		if _, err := machineconfig.LoadWithFiles(file); err != nil {
			fmt.Fprintln(stderr, err)
			status = exitFail
			continue
		}
		fmt.Fprintf(stdout, "%s: ok\n", file)
	}
	return status
}

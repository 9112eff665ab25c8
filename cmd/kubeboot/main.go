// Command kubeboot is the user's tool: make a cluster's secrets and its
// nodes' machine configs, validate them, pin and fetch artifacts, build
// node images and NoCloud seed volumes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
)

// Exit codes shared by every subcommand.
const (
	exitOK    = 0
	exitFail  = 1 // the input is invalid or the work failed
	exitUsage = 2 // the command line is wrong
)

type command struct {
	summary string
	run     func(args []string) int
}

var commands = map[string]command{
	"validate":  {"check machine configs: kubeboot validate FILE...", runValidate},
	"artifacts": {"pin, fetch and build artifacts: kubeboot artifacts lock|fetch|build|list", runArtifacts},
	"image":     {"build a node disk image: kubeboot image build --spec FILE -o OUT", runImage},
	"cidata":    {"make a NoCloud seed volume: kubeboot cidata -o seed.iso --config FILE", runCIDATA},
	"flash":     {"write a node image onto a disk: kubeboot flash --image out/node.raw.zst --device /dev/X", runFlash},
	"secrets":   {"make a cluster's shared secrets: kubeboot secrets gen -o FILE", runSecrets},
	"config":    {"write a node's machine config: kubeboot config gen --secrets FILE --role R --hostname H -o FILE", runConfig},
}

func main() { os.Exit(dispatch(os.Args[1:])) }

func dispatch(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "kubeboot: unknown command %q\n", args[0])
		usage()
		return exitUsage
	}
	return cmd.run(args[1:])
}

// parseFlags parses a subcommand's flags. When it returns false the
// command ends with the exit code: 0 for -h/--help (the flag package
// printed the usage), 2 for a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	default:
		return exitUsage, false
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kubeboot COMMAND [ARGS]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
}

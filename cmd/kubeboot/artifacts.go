package main

import (
	"fmt"
	"os"
)

func runArtifacts(args []string) int {
	fmt.Fprintln(os.Stderr, "kubeboot artifacts: not yet implemented")
	return exitFail
}

package main

import (
	"fmt"
	"os"
)

func runCIDATA(args []string) int {
	fmt.Fprintln(os.Stderr, "kubeboot cidata: not yet implemented")
	return exitFail
}

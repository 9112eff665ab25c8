package main

import (
	"fmt"
	"os"
)

func runImage(args []string) int {
	fmt.Fprintln(os.Stderr, "kubeboot image: not yet implemented")
	return exitFail
}

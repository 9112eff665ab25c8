package main

import (
	"fmt"
	"os"
)

func runValidate(args []string) int {
	fmt.Fprintln(os.Stderr, "kubeboot validate: not yet implemented")
	return exitFail
}

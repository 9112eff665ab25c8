// Command bootstrapd is the node's first-boot daemon.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bootstrapd: not yet implemented")
	os.Exit(1)
}

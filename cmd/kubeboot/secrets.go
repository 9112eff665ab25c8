package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/clustersecrets"
)

const secretsUsage = `usage: kubeboot secrets gen -o FILE [--force]

Makes the secrets one cluster shares, once, before its first node: the
cluster CA, the front-proxy CA, the etcd CA (RSA-2048, valid 10 years, as
kubeadm makes them), the service-account key pair, a bootstrap token and a
certificate key. Machine configs name the file (credentials.secretsBundle)
or carry it inline (kubeboot config gen). FILE is written 0600 (its
directory 0700 when it is created) and never overwritten without --force;
no secret is printed.

flags:`

func runSecrets(args []string) int {
	if len(args) == 0 || args[0] != "gen" {
		fmt.Fprintln(os.Stderr, secretsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return exitOK
		}
		return exitUsage
	}
	fs := flag.NewFlagSet("kubeboot secrets gen", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, secretsUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "bundle file to write")
	force := fs.Bool("force", false, "replace an existing file (a new cluster: nodes made with the old bundle cannot join it)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	s, err := clustersecrets.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot secrets gen:", err)
		return exitFail
	}
	if err := writeSecretFile(*out, clustersecrets.Marshal(s), *force); err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot secrets gen:", err)
		return exitFail
	}
	hash, err := s.CACertHash()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeboot secrets gen:", err)
		return exitFail
	}
	fmt.Printf("wrote %s (mode 0600): cluster CA %s\n", *out, hash)
	return exitOK
}

// writeSecretFile writes a file that holds secrets: 0600, its directory
// 0700 when it is created, an existing file replaced only with force.
func writeSecretFile(path string, data []byte, force bool) error {
	if force {
		return atomicfile.Write(path, data, 0o600, 0o700)
	}
	err := atomicfile.WriteNew(path, data, 0o600, 0o700)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; give --force to replace it", path)
	}
	return err
}

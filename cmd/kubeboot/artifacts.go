package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"

	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/fromsource"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/spec"
)

const artifactsUsage = `usage: kubeboot artifacts COMMAND [--spec FILE] [--cache DIR]

commands:
  lock                  pin every artifact of the spec into its lock file
                        (source: upstream downloads/resolves; source:
                        fromSource builds, like build --from-source)
  fetch                 bring every locked artifact into the cache, verified
  build --from-source   build everything from source and write the lock
  list                  show what is pinned, cached and missing

--spec defaults to configs/image.yaml; the lock is the spec's name with
.lock; --cache defaults to $XDG_CACHE_HOME/kubeboot (~/.cache/kubeboot).`

func runArtifacts(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, artifactsUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	sub := args[0]
	fs := flag.NewFlagSet("kubeboot artifacts "+sub, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	specPath := fs.String("spec", "configs/image.yaml", "image spec")
	cacheDir := fs.String("cache", "", "artifact cache directory")
	fromSource := fs.Bool("from-source", false, "build (required for build)")
	buildLog := fs.String("build-log", "", "write the full output of every build command here")
	verify := fs.Bool("verify", false, "list: re-hash every cached file and check every image archive")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kubeboot artifacts %s: unexpected argument %q\n", sub, fs.Arg(0))
		return exitUsage
	}
	if *cacheDir == "" {
		d, err := fetch.DefaultDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubeboot artifacts:", err)
			return exitFail
		}
		*cacheDir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := artifactsCmd{specPath: *specPath, cacheDir: *cacheDir, out: os.Stdout, rep: progress.For(os.Stderr),
		log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	var err error
	switch sub {
	case "lock":
		err = cmd.lock(ctx, *buildLog)
	case "fetch":
		err = cmd.fetch(ctx)
	case "build":
		if !*fromSource {
			fmt.Fprintln(os.Stderr, "kubeboot artifacts build: only --from-source is supported (use fetch for upstream specs)")
			return exitUsage
		}
		err = cmd.build(ctx, *buildLog)
	case "list":
		var complete bool
		complete, err = cmd.list(*verify)
		if err == nil && !complete {
			return exitFail
		}
	default:
		fmt.Fprintf(os.Stderr, "kubeboot artifacts: unknown command %q\n%s\n", sub, artifactsUsage)
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeboot artifacts %s: %v\n", sub, err)
		return exitFail
	}
	return exitOK
}

type artifactsCmd struct {
	specPath, cacheDir string
	out                io.Writer
	rep                progress.Reporter
	log                *slog.Logger
	remote             artifacts.Remote // zero value: the real internet
}

func (a *artifactsCmd) open() (*spec.ImageSpec, *fetch.Cache, error) {
	s, err := spec.Load(a.specPath)
	if err != nil {
		return nil, nil, err
	}
	c, err := fetch.Open(a.cacheDir)
	return s, c, err
}

func (a *artifactsCmd) lock(ctx context.Context, buildLog string) error {
	s, c, err := a.open()
	if err != nil {
		return err
	}
	if s.Source == spec.FromSource {
		return a.build(ctx, buildLog)
	}
	r := a.remote
	r.Progress = a.rep
	l, err := artifacts.LockUpstream(ctx, s, c, r)
	if err != nil {
		return err
	}
	if err := l.Write(s.LockPath()); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "wrote %s: %d files, %d images\n", s.LockPath(), len(l.Files), len(l.Images))
	return nil
}

func (a *artifactsCmd) fetch(ctx context.Context) error {
	s, c, err := a.open()
	if err != nil {
		return err
	}
	l, err := lock.Read(s.LockPath())
	if err != nil {
		return err
	}
	if s.Source == spec.FromSource {
		// Built artifacts cannot be downloaded: they are either in the cache
		// or must be rebuilt (which reproduces the same hashes).
		_, err := artifacts.LoadWithCache(a.specPath, c.Dir)
		if err == nil {
			fmt.Fprintf(a.out, "all artifacts of %s are cached in %s\n", a.specPath, c.Dir)
		}
		return err
	}
	r := a.remote
	r.Progress = a.rep
	if err := artifacts.FetchUpstream(ctx, s, l, c, r); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "fetched %d files and %d images into %s\n", len(l.Files), len(l.Images), c.Dir)
	return nil
}

func (a *artifactsCmd) build(ctx context.Context, buildLog string) error {
	s, c, err := a.open()
	if err != nil {
		return err
	}
	b := &fromsource.Builder{Spec: s, Cache: c, Progress: a.rep, Log: a.log}
	if buildLog != "" {
		f, err := os.Create(buildLog)
		if err != nil {
			return err
		}
		defer f.Close()
		b.BuildLog = f
	}
	l, err := b.Build(ctx)
	if err != nil {
		return err
	}
	if err := l.Write(s.LockPath()); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "wrote %s: %d files, %d images (cache %s)\n", s.LockPath(), len(l.Files), len(l.Images), c.Dir)
	return nil
}

// list prints every pinned artifact; it reports whether all are cached
// (and, with verify, intact).
func (a *artifactsCmd) list(verify bool) (bool, error) {
	set, items, err := artifacts.Resolve(a.specPath, a.cacheDir)
	if err != nil {
		return false, err
	}
	tw := tabwriter.NewWriter(a.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tVERSION\tHASH\tSIZE\tSTATE")
	missing := 0
	for _, it := range items {
		state := "cached"
		if !it.Cached {
			state, missing = "MISSING", missing+1
		} else if verify {
			if err := verifyItem(set.Cache, it); err != nil {
				state, missing = "CORRUPT", missing+1
				fmt.Fprintf(os.Stderr, "%s %s: %v\n", it.Kind, it.Name, err)
			} else {
				state = "verified"
			}
		}
		h := it.Hash
		if len(h) > 19 {
			h = h[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Kind, it.Name, it.Version, h, mib(it.Size), state)
	}
	if err := tw.Flush(); err != nil {
		return false, err
	}
	fmt.Fprintf(a.out, "%d pinned in %s, %d cached, %d missing or corrupt (cache %s)\n", len(items),
		filepath.Base(set.Spec.LockPath()), len(items)-missing, missing, set.Cache.Dir)
	if missing > 0 {
		return false, nil
	}
	return true, nil
}

// verifyItem re-hashes a cached file, or checks an image archive's blobs
// and that it holds the locked manifest.
func verifyItem(c *fetch.Cache, it artifacts.Item) error {
	if it.Kind != "image" {
		return c.VerifyFile(it.Hash)
	}
	info, err := oci.ReadArchive(it.Path)
	if err != nil {
		return err
	}
	if info.Digest.String() != it.Hash {
		return fmt.Errorf("archive holds %s, the lock pins %s", info.Digest, it.Hash)
	}
	return nil
}

func mib(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
}

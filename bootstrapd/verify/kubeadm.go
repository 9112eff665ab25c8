package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/kubeadm"
	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/machineconfig"
)

// maxVerdict bounds the preflight record read.
const maxVerdict = 1 << 20

func (n *node) kubeadm(context.Context) Section {
	s := Section{Name: "kubeadm", Title: "kubeadm preflight and bootstrapd's done marker"}
	stageName := kubeadm.Join().Name()
	if n.o.Config.Role == machineconfig.RoleInit {
		stageName = kubeadm.Init().Name()
	}

	rec, err := n.st.Stage(stageName)
	switch {
	case err != nil:
		s.fail("stage "+stageName, "recorded as done", err.Error())
	case rec == nil:
		s.fail("stage "+stageName, "recorded as done", "no record: kubeadm has not completed on this node")
	default:
		s.found("stage %s: done at %s (config %s)", stageName, rec.Finished.Format(time.RFC3339), rec.ConfigHash)
		s.pass("stage "+stageName, "recorded as done", "done at "+rec.Finished.Format(time.RFC3339))
	}

	file := filepath.Join(n.st.StageDir(stageName), kubeadm.PreflightFile)
	name := "kubeadm preflight: no warning passed on"
	expected := "no finding, or only warnings bootstrapd verified (firewalld's, with the firewall stage's ports open)"
	v, err := readVerdict(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.fail(name, expected, "no record of kubeadm's preflight at "+n.nodePath(file))
	case err != nil:
		s.fail(name, expected, err.Error())
	default:
		for _, f := range v.Dropped {
			s.found("preflight dropped (verified): %s", f)
		}
		for _, f := range v.Accepted {
			s.found("preflight passed on (kubernetes.ignorePreflightErrors): %s", f)
		}
		for _, f := range v.Fatal {
			s.found("preflight failed: %s", f)
		}
		var bad []string
		for _, f := range append(append([]kubeadm.Finding{}, v.Accepted...), v.Fatal...) {
			bad = append(bad, f.String())
		}
		found := fmt.Sprintf("%d dropped as verified, none passed on", len(v.Dropped))
		if len(bad) > 0 {
			found = strings.Join(bad, "; ")
		}
		s.check(name, len(bad) == 0, expected, found)
	}

	done, err := n.st.Done()
	current := n.o.Config.Hash()
	switch {
	case err != nil:
		s.fail("done marker", "present", err.Error())
	case done == nil:
		s.fail("done marker", "present, for config "+current, "absent: bootstrapd has not finished on this node")
	default:
		s.found("done: %s (config %s); the stages took %s", done.Time.Format(time.RFC3339), done.ConfigHash, progress.Total(done))
		s.check("done marker", done.ConfigHash == current, "present, for config "+current, "present, for config "+done.ConfigHash)
	}
	failed, err := n.st.Failure()
	switch {
	case err != nil:
		s.fail("no failed marker", "absent", err.Error())
	case failed != nil:
		s.fail("no failed marker", "absent", fmt.Sprintf("stage %s failed at %s: %s", failed.Stage, failed.Time.Format(time.RFC3339), failed.Reason))
	default:
		s.pass("no failed marker", "absent", "absent")
	}
	return s
}

// readVerdict reads the kubeadm stage's record of its preflight run.
func readVerdict(path string) (*kubeadm.Verdict, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxVerdict+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxVerdict {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxVerdict)
	}
	var v kubeadm.Verdict
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &v, nil
}

// nodePath is p (under Root) as the node sees it.
func (n *node) nodePath(p string) string {
	rel, err := filepath.Rel(n.o.Root, p)
	if err != nil {
		return p
	}
	return "/" + rel
}

package banner

import (
	"path/filepath"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/kubeconfig"
	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Collect gathers the view of the node under root: cfg is the loaded
// config (nil when the source failed), plan the whole plan; addresses come
// from the kernel of the calling process's network namespace.
func Collect(root string, cfg *machineconfig.MachineConfig, plan []engine.Step) (View, error) {
	st := state.Open(root)
	var v View
	var err error
	if v.Failed, err = st.Failure(); err != nil {
		return v, err
	}
	if v.Done, err = st.Done(); err != nil {
		return v, err
	}
	boot, err := progress.Read(root)
	if err != nil {
		return v, err
	}
	v.Running = boot != nil && boot.Alive()
	if v.Lines, err = progress.Lines(st, boot, plan, v.Failed); err != nil {
		return v, err
	}
	if v.Addresses, err = Addresses(); err != nil {
		return v, err
	}
	if cfg != nil {
		v.Hostname, v.Role, v.Endpoint = cfg.Hostname, string(cfg.Role), cfg.Kubernetes.ControlPlaneEndpoint
		v.Kubeconfig = kubeconfig.Paths(cfg)
	} else {
		if boot != nil {
			v.Role = boot.Role
		}
		var uts unix.Utsname
		if err := unix.Uname(&uts); err == nil {
			v.Hostname = unix.ByteSliceToString(uts.Nodename[:])
		}
	}
	return v, nil
}

// Write puts the banner for v under root and reports whether it changed
// (only then is agetty asked to redraw).
func Write(root string, v View) (bool, error) {
	// 0644: the console shows it to anyone at the screen anyway.
	return atomicfile.WriteIfChanged(filepath.Join(root, IssueFile), []byte(Issue(v)), 0o644, 0o755)
}

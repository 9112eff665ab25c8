// Package nodepath names the paths on a node that more than one package
// relies on: the image builder puts files there, bootstrapd's stages read
// and write them, tests and `bootstrapd verify` look at them.
package nodepath

const (
	// ImagesDir holds the OCI archives of the pinned container images,
	// one <name>_<tag>.tar each, on the read-only root.
	ImagesDir = "/usr/share/kubeboot/images"
	// ImagesIndex lists "<ref> <digest> <file>" per archive.
	ImagesIndex = ImagesDir + "/index"
	// PackagesLock is the installed Debian package list, in the image.
	PackagesLock = "/usr/share/kubeboot/packages.lock"

	// PKIDir is kubeadm's certificatesDir, where control planes get the
	// cluster CAs before kubeadm runs.
	PKIDir = "/etc/kubernetes/pki"
	// AdminConf is the admin kubeconfig kubeadm writes on control planes.
	AdminConf = "/etc/kubernetes/admin.conf"
	// KubeletConf is the kubelet's kubeconfig, on every node once joined.
	KubeletConf = "/etc/kubernetes/kubelet.conf"
)

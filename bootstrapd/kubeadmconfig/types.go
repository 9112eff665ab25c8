package kubeadmconfig

import (
	"time"
)

// The document kinds kubeboot renders; machineconfig's kubeadmPatches name
// them too.
const (
	kindInit      = "InitConfiguration"
	kindCluster   = "ClusterConfiguration"
	kindJoin      = "JoinConfiguration"
	kindKubelet   = "KubeletConfiguration"
	kindKubeProxy = "KubeProxyConfiguration"
)

const (
	kubeadmAPIVersion   = "kubeadm.k8s.io/v1beta4"
	kubeletAPIVersion   = "kubelet.config.k8s.io/v1beta1"
	kubeProxyAPIVersion = "kubeproxy.config.k8s.io/v1alpha1"
)

// What follows is the part of kubeadm's v1beta4 API (and of the kubelet's
// v1beta1 one) that kubeboot sets, with kubeadm's field names, in
// kubeadm's field order. Fields left out keep kubeadm's defaults; users
// reach them through kubeadmPatches. Empty fields are omitted, except
// where kubeadm gives absence a meaning (taints).

type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type initConfiguration struct {
	typeMeta         `yaml:",inline"`
	BootstrapTokens  []bootstrapToken `yaml:"bootstrapTokens,omitempty"`
	NodeRegistration nodeRegistration `yaml:"nodeRegistration"`
	LocalAPIEndpoint apiEndpoint      `yaml:"localAPIEndpoint"`
	CertificateKey   string           `yaml:"certificateKey,omitempty"`
	SkipPhases       []string         `yaml:"skipPhases,omitempty"`
	Patches          *patches         `yaml:"patches,omitempty"`
	Timeouts         timeouts         `yaml:"timeouts"`
}

type clusterConfiguration struct {
	typeMeta             `yaml:",inline"`
	Etcd                 etcd       `yaml:"etcd"`
	Networking           networking `yaml:"networking"`
	KubernetesVersion    string     `yaml:"kubernetesVersion"`
	ControlPlaneEndpoint string     `yaml:"controlPlaneEndpoint"`
	APIServer            apiServer  `yaml:"apiServer,omitempty"`
	ControllerManager    component  `yaml:"controllerManager"`
	Scheduler            component  `yaml:"scheduler"`
	EncryptionAlgorithm  string     `yaml:"encryptionAlgorithm"`
}

type etcd struct {
	Local component `yaml:"local"`
}

// component is the part of kubeadm's ControlPlaneComponent (and of
// LocalEtcd) that kubeboot sets.
type component struct {
	ExtraArgs []arg `yaml:"extraArgs,omitempty"`
}

type joinConfiguration struct {
	typeMeta         `yaml:",inline"`
	NodeRegistration nodeRegistration  `yaml:"nodeRegistration"`
	Discovery        discovery         `yaml:"discovery"`
	ControlPlane     *joinControlPlane `yaml:"controlPlane,omitempty"`
	SkipPhases       []string          `yaml:"skipPhases,omitempty"`
	Patches          *patches          `yaml:"patches,omitempty"`
	Timeouts         timeouts          `yaml:"timeouts"`
}

type kubeletConfiguration struct {
	typeMeta     `yaml:",inline"`
	CgroupDriver string `yaml:"cgroupDriver"`
	ResolvConf   string `yaml:"resolvConf"`
}

type bootstrapToken struct {
	Token       string   `yaml:"token"`
	Description string   `yaml:"description,omitempty"`
	TTL         duration `yaml:"ttl"`
	Usages      []string `yaml:"usages"`
	Groups      []string `yaml:"groups"`
}

type nodeRegistration struct {
	Name      string `yaml:"name"`
	CRISocket string `yaml:"criSocket"`
	// Taints is a pointer because kubeadm reads "absent" as "the default
	// control-plane taint" and "[]" as "no taint".
	Taints                *[]taint `yaml:"taints,omitempty"`
	KubeletExtraArgs      []arg    `yaml:"kubeletExtraArgs,omitempty"`
	IgnorePreflightErrors []string `yaml:"ignorePreflightErrors,omitempty"`
	ImagePullPolicy       string   `yaml:"imagePullPolicy"`
}

type taint struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value,omitempty"`
	Effect string `yaml:"effect"`
}

// arg is one command-line flag: kubeadm v1beta4 lists them, not a map.
type arg struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type apiEndpoint struct {
	AdvertiseAddress string `yaml:"advertiseAddress"`
	BindPort         int    `yaml:"bindPort"`
}

type networking struct {
	ServiceSubnet string `yaml:"serviceSubnet"`
	PodSubnet     string `yaml:"podSubnet,omitempty"`
	DNSDomain     string `yaml:"dnsDomain"`
}

type apiServer struct {
	CertSANs []string `yaml:"certSANs,omitempty"`
}

type discovery struct {
	BootstrapToken bootstrapTokenDiscovery `yaml:"bootstrapToken"`
}

type bootstrapTokenDiscovery struct {
	Token             string   `yaml:"token"`
	APIServerEndpoint string   `yaml:"apiServerEndpoint"`
	CACertHashes      []string `yaml:"caCertHashes"`
}

type joinControlPlane struct {
	LocalAPIEndpoint apiEndpoint `yaml:"localAPIEndpoint"`
	CertificateKey   string      `yaml:"certificateKey,omitempty"`
}

type patches struct {
	Directory string `yaml:"directory"`
}

type timeouts struct {
	ControlPlaneComponentHealthCheck duration `yaml:"controlPlaneComponentHealthCheck,omitempty"`
	KubeletHealthCheck               duration `yaml:"kubeletHealthCheck,omitempty"`
	KubernetesAPICall                duration `yaml:"kubernetesAPICall,omitempty"`
	EtcdAPICall                      duration `yaml:"etcdAPICall,omitempty"`
	TLSBootstrap                     duration `yaml:"tlsBootstrap,omitempty"`
	Discovery                        duration `yaml:"discovery,omitempty"`
}

// duration is written as Go formats it ("10m0s"), which is how
// metav1.Duration reads it.
type duration time.Duration

func (d duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// IsZero makes omitempty drop unset timeouts but keep a TTL of 0s.
func (d duration) IsZero() bool { return d == 0 }

package machineconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// containerd's registry host capabilities a node's mirror may have; push
// is left out: a node only pulls.
const (
	CapabilityPull    = "pull"
	CapabilityResolve = "resolve"
)

var capabilities = []string{CapabilityPull, CapabilityResolve}

// KubernetesRegistry serves the Kubernetes images every kubeboot image
// bakes (the spec must list exactly kubeadm's images). They are never
// pulled, so no mirror may open that registry to pulls. Other registries of
// an image's pinned set are refused on the node (bootstrapd/registries),
// where the set is known.
const KubernetesRegistry = "registry.k8s.io"

// Docker Hub's other names; image references say docker.io.
var dockerHubAliases = []string{"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

func (c *checker) containerd(cd Containerd) {
	seen := map[string]string{}
	for i, m := range cd.Mirrors {
		p := index("containerd.mirrors", i)
		if msg := checkRegistryHost(m.Registry); msg != "" {
			c.add(p+".registry", "%s", msg)
		} else if first, dup := seen[m.Registry]; dup {
			c.add(p+".registry", "registry %q already has mirrors at %s; list all its endpoints there", m.Registry, first)
		} else {
			seen[m.Registry] = p
		}
		if len(m.Endpoints) == 0 {
			c.add(p+".endpoints", "at least one endpoint is required: the mirror's url")
		}
		urls := map[string]string{}
		for j, e := range m.Endpoints {
			ep := index(p+".endpoints", j)
			u, msg := checkMirrorURL(e.URL)
			if msg != "" {
				c.add(ep+".url", "%s", msg)
			} else if first, dup := urls[u.String()]; dup {
				c.add(ep+".url", "%s is already listed at %s", e.URL, first)
			} else {
				urls[u.String()] = ep
			}
			if e.CACert != "" {
				if u != nil && u.Scheme == "http" {
					c.add(ep+".caCert", "caCert needs an https url; an http mirror uses no TLS")
				} else if msg := checkCACert(e.CACert); msg != "" {
					c.add(ep+".caCert", "%s", msg)
				}
			}
			if e.Capabilities != nil && len(e.Capabilities) == 0 {
				c.add(ep+".capabilities", "at least one capability is required: pull, resolve, or both (the default when left out)")
			}
			for k, cp := range e.Capabilities {
				cpp := index(ep+".capabilities", k)
				switch {
				case cp == "push":
					c.add(cpp, "a node only pulls; capabilities are pull and resolve")
				case !slices.Contains(capabilities, cp):
					c.add(cpp, "unknown capability %q; must be pull or resolve%s", cp, didYouMean(cp, capabilities))
				case slices.Index(e.Capabilities, cp) < k:
					c.add(cpp, "capability %q is listed twice", cp)
				}
			}
		}
	}
}

// checkRegistryHost checks the host part of image references, as the
// directory name containerd looks up under certs.d: a lower-case DNS name
// or IP address, with a port if the references carry one.
func checkRegistryHost(r string) string {
	switch {
	case r == "":
		return "registry is required: the host of the image references, e.g. docker.io or registry.home.local:5000"
	case strings.Contains(r, "://") || strings.Contains(r, "/"):
		return fmt.Sprintf("registry %q must be a host name with an optional port, as in image references (docker.io, registry.home.local:5000), not a URL or path", r)
	case r != strings.ToLower(r):
		return fmt.Sprintf("registry %q must be lower case, as in image references", r)
	case slices.Contains(dockerHubAliases, r):
		return fmt.Sprintf("image references name Docker Hub docker.io, not %s; write registry: docker.io", r)
	case r == KubernetesRegistry:
		return fmt.Sprintf("%s serves the Kubernetes images baked into the node image; they are never pulled, so it takes no mirror", r)
	}
	host := r
	if h, port, err := net.SplitHostPort(r); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("registry %q: port %q is out of range (1-65535)", r, port)
		}
		host = h
	} else if strings.HasPrefix(r, "[") || strings.Count(r, ":") == 1 {
		return fmt.Sprintf("registry %q must be host or host:port", r)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		if strings.Contains(host, ":") && !strings.HasPrefix(r, "[") {
			return fmt.Sprintf("registry %q: an IPv6 address is written in brackets, [%s]", r, host)
		}
		return ""
	}
	if msg := checkDNSName(host); msg != "" {
		return "registry: " + msg
	}
	return ""
}

// checkMirrorURL checks scheme://host[:port] with scheme https or http.
func checkMirrorURL(s string) (*url.URL, string) {
	if s == "" {
		return nil, "url is required: https://host[:port] of the mirror"
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Opaque != "" || u.Host == "":
		return nil, fmt.Sprintf("url %q must be https://host[:port] (or http://host[:port] for a mirror without TLS)", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Sprintf("url %q: scheme must be https, or http for a mirror without TLS", s)
	case u.User != nil:
		return nil, "url must not carry a user name or password: the hosts.toml is readable by all on the node (the value is not shown)"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return nil, fmt.Sprintf("url %q must be scheme://host[:port] only: containerd adds the registry API path /v2", s)
	}
	host := u.Hostname()
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Sprintf("url %q: port %q is out of range (1-65535)", s, p)
		}
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if msg := checkDNSName(host); msg != "" {
			return nil, fmt.Sprintf("url %q: %s", s, msg)
		}
	}
	u.Path = ""
	u.Host = strings.ToLower(u.Host)
	return u, ""
}

// checkCACert checks PEM holding one or more X.509 certificates and
// nothing else.
func checkCACert(s string) string {
	rest := []byte(s)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if b.Type != "CERTIFICATE" {
			return fmt.Sprintf("caCert block %d is %q; only CERTIFICATE blocks belong here (never a private key)", n, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Sprintf("caCert certificate %d: %v", n, err)
		}
	}
	switch {
	case n == 0:
		return "caCert must be PEM: -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----"
	case len(bytes.TrimSpace(rest)) > 0:
		return fmt.Sprintf("caCert has text after certificate %d that is not PEM", n)
	}
	return ""
}

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/internal/testca"
)

// Registry is a container registry of the lab: go-containerregistry's
// in-memory registry serving HTTPS at an address of the lab's namespace,
// with a certificate from a CA of its own. It is the mirror a node's
// containerd.mirrors names, and it records which client asked for which
// path, so a test can tell that a node's pull went through it.
type Registry struct {
	Addr string // host:port in the lab
	CA   []byte // PEM: the caCert of a node's mirror endpoint
	lab  *Lab
	srv  *http.Server

	mu   sync.Mutex
	seen []registryRequest
}

type registryRequest struct{ client, method, path string }

// StartRegistry serves a registry at addr, an address of one of the lab's
// bridges with a port, until the lab is torn down.
func (l *Lab) StartRegistry(addr string) (*Registry, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("registry address %q: want ip:port", addr)
	}
	ca, cert, err := testca.Server("kubeboot e2e registry", ip)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	if err := inNamespace(l.NS, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		return nil, fmt.Errorf("registry at %s in %s: %w", addr, l.NS, err)
	}
	r := &Registry{Addr: addr, CA: ca, lab: l}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			client, _, _ := net.SplitHostPort(req.RemoteAddr)
			r.mu.Lock()
			r.seen = append(r.seen, registryRequest{client, req.Method, req.URL.Path})
			r.mu.Unlock()
			h.ServeHTTP(w, req)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: time.Minute,
	}
	go r.srv.ServeTLS(ln, "", "")
	l.onClose("the registry at "+addr, r.srv.Close)
	return r, nil
}

// Push writes img to the registry as repoTag (repository:tag), from inside
// the lab's namespace and trusting only the registry's CA.
func (r *Registry) Push(ctx context.Context, repoTag string, img v1.Image) error {
	ref, err := name.ParseReference(r.Addr + "/" + repoTag)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.CA)
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNamespace(r.lab.NS, func() error { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
		return c, err
	}
	tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: pool}}
	if err := remote.Write(ref, img, remote.WithTransport(tr), remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s to the lab's registry: %w", repoTag, err)
	}
	return nil
}

// Fetched lists the paths client (an IP address) asked for with GET, in
// order.
func (r *Registry) Fetched(client string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var paths []string
	for _, q := range r.seen {
		if q.client == client && q.method == http.MethodGet {
			paths = append(paths, q.path)
		}
	}
	return paths
}

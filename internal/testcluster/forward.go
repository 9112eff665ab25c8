package testcluster

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// Forward serves l as a load balancer in front of target (host:port):
// every connection is copied to and from a new one to target, until the
// test ends. Tests use it to reach the API server from another network
// namespace, or to bring a control-plane endpoint up late.
func Forward(tb testing.TB, l net.Listener, target string) {
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()
}

// CACertHash is the cluster CA's pin as kubeadm's discovery takes it
// (caCertHashes): "sha256:" and the hex sha256 of its SubjectPublicKeyInfo.
func (c *Cluster) CACertHash(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile(c.CA.Cert)
	must(tb, err)
	block, _ := pem.Decode(data)
	if block == nil {
		tb.Fatalf("%s: no PEM block", c.CA.Cert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	must(tb, err)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

package machineconfig

import (
	"crypto/rsa"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SSHEnabled reports whether any user has an SSH key: only then does the
// node run sshd and open firewall.sshPort.
func (c *MachineConfig) SSHEnabled() bool {
	for _, u := range c.Users {
		if len(u.SSHAuthorizedKeys) > 0 {
			return true
		}
	}
	return false
}

// maxKeyLine bounds one authorized_keys entry: an RSA-16384 key with a
// long comment and options is under 4 KiB.
const maxKeyLine = 8 << 10

// minRSABits is sshd's RequiredRSASize default: smaller RSA keys are
// refused at login, so they are refused here first.
const minRSABits = 1024

// authorizedKeys checks that every entry of u.SSHAuthorizedKeys is one
// public key line sshd accepts (authorized_keys format, options allowed).
func (c *checker) authorizedKeys(u User, base string) {
	if len(u.SSHAuthorizedKeys) > 0 && u.Name == "root" {
		c.add(base, "root cannot log in over SSH (the image's sshd has PermitRootLogin no): give the keys to another user")
		return
	}
	seen := map[string]string{}
	for i, line := range u.SSHAuthorizedKeys {
		p := index(base, i)
		if len(line) > maxKeyLine {
			c.add(p, "an authorized key of %d bytes is longer than the %d bytes a key line can need", len(line), maxKeyLine)
			continue
		}
		if strings.ContainsAny(line, "\n\r") {
			c.add(p, "one key per list item: an authorized key is one line")
			continue
		}
		if slices.Contains(strings.Fields(line), ssh.KeyAlgoDSA) {
			c.add(p, "DSA keys are not supported by OpenSSH 10, the image's sshd: use an ed25519 or ECDSA key (ssh-keygen -t ed25519)")
			continue
		}
		key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			c.add(p, "not an SSH public key in authorized_keys format (like \"ssh-ed25519 AAAAC3Nz... user@host\", the content of a .pub file): %v", err)
			continue
		}
		if len(strings.TrimSpace(string(rest))) > 0 {
			c.add(p, "one key per list item: more follows the key")
			continue
		}
		if msg := refusedKey(key); msg != "" {
			c.add(p, "%s", msg)
			continue
		}
		fp := ssh.FingerprintSHA256(key)
		if first, dup := seen[fp]; dup {
			c.add(p, "duplicate key %s (also %s)", fp, first)
			continue
		}
		seen[fp] = p
	}
}

// refusedKey says why the image's sshd would refuse a key it can parse.
func refusedKey(key ssh.PublicKey) string {
	ck, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return ""
	}
	if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
		return fmt.Sprintf("an RSA key of %d bits is refused by sshd (at least %d): use an ed25519 key (ssh-keygen -t ed25519)", rk.N.BitLen(), minRSABits)
	}
	return ""
}

// time checks the NTP servers: host names or IP addresses, each once.
func (c *checker) time(t Time) {
	seen := map[string]string{}
	for i, s := range t.Servers {
		p := index("time.servers", i)
		if a, err := netip.ParseAddr(s); err == nil {
			if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
				c.add(p, "NTP server %q must be a unicast address without a zone, or a host name", s)
				continue
			}
		} else if msg := checkDNSName(s); msg != "" {
			c.add(p, "NTP server: %s", msg)
			continue
		}
		k := strings.ToLower(s)
		if first, dup := seen[k]; dup {
			c.add(p, "duplicate NTP server %q (also %s)", s, first)
			continue
		}
		seen[k] = p
	}
}

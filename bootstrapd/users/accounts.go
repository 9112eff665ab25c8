package users

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// Account is one line of the node's /etc/passwd.
type Account struct {
	Name     string
	UID, GID int
	Home     string
}

// maxDBSize bounds /etc/passwd and /etc/group: a node has a few dozen
// accounts, and a file of megabytes is damage, not data.
const maxDBSize = 4 << 20

type accountDB struct {
	byName map[string]*Account
	byUID  map[int]string
	groups map[string]bool
}

// Lookup returns the node's account called name, or nil when there is none.
func Lookup(env *stage.Env, name string) (*Account, error) {
	db, err := readAccounts(env)
	if err != nil {
		return nil, err
	}
	return db.byName[name], nil
}

func readAccounts(env *stage.Env) (*accountDB, error) {
	db := &accountDB{byName: map[string]*Account{}, byUID: map[int]string{}, groups: map[string]bool{}}
	err := eachEntry(env.Path("/etc/passwd"), 7, func(f []string) error {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("account %s has a uid or gid that is not a number", f[0])
		}
		db.byName[f[0]] = &Account{Name: f[0], UID: uid, GID: gid, Home: f[5]}
		if _, dup := db.byUID[uid]; !dup {
			db.byUID[uid] = f[0]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachEntry(env.Path("/etc/group"), 4, func(f []string) error {
		db.groups[f[0]] = true
		return nil
	})
	return db, err
}

// eachEntry calls fn with the colon-separated fields of each entry of a
// passwd(5)-style file; comments, blank lines and NIS "+"/"-" entries are
// skipped.
func eachEntry(path string, fields int, fn func([]string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read accounts: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDBSize+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxDBSize {
		return fmt.Errorf("%s is larger than %d bytes", path, maxDBSize)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxDBSize)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != fields {
			return fmt.Errorf("%s:%d: %d fields, want %d", path, n, len(parts), fields)
		}
		if err := fn(parts); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}

package timesync

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/internal/nspawntest"
	"kubeboot.dev/kubeboot/machineconfig"
)

func TestContent(t *testing.T) {
	if Content(nil) != nil {
		t.Error("a drop-in without servers")
	}
	want := "# time.servers of the machine config, written by bootstrapd\n[Time]\nNTP=172.16.0.254 ntp.home.local\nFallbackNTP=\n"
	if got := string(Content([]string{"172.16.0.254", "ntp.home.local"})); got != want {
		t.Errorf("drop-in:\n%s\nwant:\n%s", got, want)
	}
}

// The test runs this test binary inside a booted Debian container, where
// it talks to the container's systemd; these carry the operation and the
// servers.
const (
	innerEnv    = "KUBEBOOT_TIME_INNER"
	serversEnv  = "KUBEBOOT_TIME_SERVERS"
	shortWaitOp = "apply-short-wait"
)

func TestMain(m *testing.M) { nspawntest.Main(m, innerEnv, runInner) }

func runInner(op string) ([]stage.Change, error) {
	cfg := &machineconfig.MachineConfig{Time: machineconfig.Time{Servers: strings.Fields(os.Getenv(serversEnv))}}
	env := &stage.Env{Root: "/", NetNS: netns.None(), Config: cfg, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Data: &stage.RunData{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	switch op {
	case "plan":
		return New().Plan(ctx, env)
	case "apply":
		return New().Apply(ctx, env)
	case shortWaitOp:
		return Stage{SyncTimeout: 5 * time.Second}.Apply(ctx, env)
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// chronyConf serves the NTP server container's clock (local stratum) to
// anyone, with -x on the command line so chronyd never touches a clock,
// and no command sockets.
const chronyConf = "local stratum 8\nallow all\ncmdport 0\nbindcmdaddress /\npidfile /run/kb-chronyd.pid\n"

const (
	serverIP = "10.123.0.1"
	nodeIP   = "10.123.0.2"
	nobody   = "10.123.0.99" // nothing answers there
)

// TestTimesyncdSyncsFromChrony runs the stage against a real systemd and
// systemd-timesyncd (Debian trixie in systemd-nspawn) that synchronise with
// a real chronyd (Debian's chrony, in a second container) across a veth
// pair between two network namespaces the test makes.
//
// The clock is the host's: containers have no clock of their own. So
// nothing here may set it: nspawn leaves CAP_SYS_TIME out of the
// containers' bounding set (checked first), chronyd runs with -x, and
// timesyncd's adjustment fails with EPERM. timesyncd still accepts the
// answer and touches its mark, which is what the stage waits for. For the
// same reason the unit's conditions (ConditionVirtualization=!container,
// ConditionCapability=CAP_SYS_TIME) are reset by a drop-in the test adds:
// on a node they hold.
func TestTimesyncdSyncsFromChrony(t *testing.T) {
	nspawntest.Require(t)
	nodeFS := nspawntest.Rootfs(t, "trixie", []string{"systemd", "systemd-sysv", "dbus", "systemd-timesyncd"})
	ntpFS := nspawntest.Rootfs(t, "trixie", []string{"systemd", "systemd-sysv", "dbus", "chrony"})
	id := fmt.Sprintf("kbts%d", os.Getpid()%100000)
	netnstest.New(t, id+"n")
	netnstest.New(t, id+"s")
	netnstest.Veth(t, id+"n", id+"s", "eth0", nodeIP+"/24", serverIP+"/24")
	bind := t.TempDir()
	nspawntest.CopySelf(t, bind, "timesync.test")
	if err := os.WriteFile(filepath.Join(bind, "chrony.conf"), []byte(chronyConf), 0o644); err != nil {
		t.Fatal(err)
	}

	ntp := nspawntest.Boot(t, ntpFS, id+"s", bind)
	node := nspawntest.Boot(t, nodeFS, id+"n", bind)
	ntp.WaitSystem(t)
	node.WaitSystem(t)
	for _, c := range []*nspawntest.Container{ntp, node} {
		if c.CanSetClock(t) {
			t.Fatalf("container %s may set the host's clock: refusing to run time daemons in it", c.Name)
		}
	}
	ntp.MustExec(t, "systemd-run", "--unit=kb-chronyd", "/usr/sbin/chronyd", "-x", "-d", "-f", nspawntest.BindDir+"/chrony.conf")
	node.MustExec(t, "mkdir", "-p", "/etc/systemd/system/"+Unit+".d")
	node.MustExec(t, "sh", "-c", `printf '[Unit]\nConditionVirtualization=\n' > /etc/systemd/system/`+Unit+`.d/test-in-container.conf`)
	node.MustExec(t, "systemctl", "daemon-reload")

	run := func(op, servers string) nspawntest.Result {
		t.Helper()
		return node.Inner(t, "timesync.test", innerEnv, op, serversEnv+"="+servers)
	}
	want := func(what string, res nspawntest.Result, changes ...stage.Change) {
		t.Helper()
		if res.Error != "" {
			t.Fatalf("%s in the container: %s\njournal:\n%s", what, res.Error, node.MustExec(t, "journalctl", "-u", Unit, "--no-pager"))
		}
		if !slices.Equal(res.Changes, changes) {
			t.Errorf("%s: %q, want %q", what, res.Changes, changes)
		}
	}

	want("plan", run("plan", serverIP), "write "+DropIn, "restart "+Unit)
	res := run("apply", serverIP)
	want("apply", res, "write "+DropIn, "restart "+Unit)
	t.Logf("synchronised with chronyd after %s", res.Took.Round(time.Millisecond))
	if got := node.MustExec(t, "cat", DropIn); got != strings.TrimSpace(string(Content([]string{serverIP}))) {
		t.Errorf("%s:\n%s", DropIn, got)
	}
	if got := node.MustExec(t, "timedatectl", "show-timesync", "-p", "ServerAddress", "--value"); got != serverIP {
		t.Errorf("timesyncd's server is %q, want chronyd at %s", got, serverIP)
	}
	if got := node.MustExec(t, "timedatectl", "show-timesync", "-p", "NTPMessage", "--value"); !strings.Contains(got, "Stratum=8") {
		t.Errorf("timesyncd's last NTP message %q is not chronyd's (local stratum 8)", got)
	}
	want("plan after apply", run("plan", serverIP))
	want("apply again", run("apply", serverIP))

	// Nobody answers: the wait ends at its limit with what timesyncd says.
	res = run(shortWaitOp, nobody)
	if !slices.Equal(res.Changes, []stage.Change{"write " + DropIn, "restart " + Unit}) ||
		!strings.Contains(res.Error, "time.servers: no NTP answer from "+nobody+" within 5s (systemd-timesyncd says: ") ||
		!strings.Contains(res.Error, "systemctl restart bootstrapd") {
		t.Errorf("unreachable server: %+v", res)
	}
	if res.Took > time.Minute {
		t.Errorf("the 5 s wait took %s", res.Took)
	}

	// No servers: the drop-in goes, timesyncd restarts on its defaults, no wait.
	want("no servers", run("apply", ""), "remove "+DropIn, "restart "+Unit)
	if _, err := node.Exec(t, nil, "test", "-e", DropIn); err == nil {
		t.Errorf("%s still there", DropIn)
	}
	want("no servers, again", run("apply", ""))
}

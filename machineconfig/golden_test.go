package machineconfig

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Golden tests of the full error output: each testdata/NAME.yaml has its
// expected output, line and column included, in testdata/NAME.golden.
// Files named netplan-file*.yaml are parsed with ParseNetplan.
func TestGoldenErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(filepath.Base(file), "netplan-file") {
				_, err = ParseNetplan(file, data)
			} else {
				_, err = Parse(file, data)
			}
			if err == nil {
				t.Fatal("want errors, the file parsed")
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("err is %T, want ErrorList", err)
			}
			for i, e := range list {
				if e.Line < 1 || e.Column < 1 {
					t.Errorf("error without a position: %v", e)
				}
				if i > 0 && (e.Line < list[i-1].Line || e.Line == list[i-1].Line && e.Column < list[i-1].Column) {
					t.Errorf("errors not sorted by position: %v after %v", e, list[i-1])
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenErrors -update ./machineconfig)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s\n--- got:\n%s--- want:\n%s", golden, got, want)
			}
		})
	}
}

package machineconfig

import (
	"errors"
	"testing"
)

// A document of another kind gets one error, not one per foreign field; a
// misspelt MachineConfig is still checked in full.
func TestOtherKindStopsEarly(t *testing.T) {
	_, err := Parse("image.yaml", []byte("apiVersion: kubeboot.dev/v1alpha1\nkind: ImageSpec\nsource: fromSource\nimages: {}\n"))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 {
		t.Fatalf("want exactly one error, got %v", err)
	}
	if got, want := list[0].Error(), `image.yaml:2:7: kind: kind "ImageSpec": this file is not a MachineConfig, so nothing else was checked`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}

	_, err = Parse("typo.yaml", []byte("apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfg\n"))
	if !errors.As(err, &list) || len(list) < 2 {
		t.Fatalf("a misspelt kind must still be checked in full, got %v", err)
	}
}

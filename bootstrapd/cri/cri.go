// Package cri talks to the container runtime through the kubelet's own
// interface (the CRI), the way kubeadm and crictl do, for what bootstrapd
// does or checks outside the kubelet.
package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxMessage bounds one CRI answer (a verbose status carries the OCI
// runtime spec; gRPC's default is 4 MiB).
const maxMessage = 8 << 20

// Dial returns a connection to the CRI at socket (a unix socket path). It
// connects lazily: the first call says whether the runtime answers.
func Dial(socket string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("CRI at %s: %w", socket, err)
	}
	return conn, nil
}

// RemovePods stops and removes every pod sandbox (and so every container)
// the runtime holds, each call bounded by timeout, and returns how many it
// removed. kubeadm reset does the same with a short connection timeout
// and only warns when the runtime is slow to answer; then the control
// plane's containers keep its ports and the next kubeadm init fails its
// preflight. The kubelet must be stopped, or it starts them again.
func RemovePods(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) (int, error) {
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, timeout) }
	c, cancel := call()
	list, err := rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		return 0, fmt.Errorf("CRI: list pod sandboxes: %w", err)
	}
	var errs []error
	removed := 0
	for _, sb := range list.GetItems() {
		name := sb.GetMetadata().GetNamespace() + "/" + sb.GetMetadata().GetName()
		c, cancel := call()
		_, err := rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
		cancel()
		if err == nil {
			c, cancel = call()
			_, err = rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()})
			cancel()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("CRI: remove pod %s: %w", name, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

package rejoin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// etcdGateway makes the few etcd calls a rejoin needs through etcd's JSON
// gateway (grpc-gateway, served on every client port and on by default),
// over HTTPS with a client certificate: not etcd's gRPC client, whose gRPC
// and protobuf cost bootstrapd several MiB of memory on every boot.
type etcdGateway struct {
	http      *http.Client
	endpoints []string
}

func newEtcdGateway(endpoints []string, tlsCfg *tls.Config) *etcdGateway {
	return &etcdGateway{endpoints: endpoints, http: &http.Client{Timeout: callTimeout,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 1}}}
}

func (g *etcdGateway) close() { g.http.CloseIdleConnections() }

// member is etcdserverpb.Member in the gateway's JSON (uint64s quoted).
type member struct {
	ID         uint64   `json:"ID,string"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner"`
}

// errUnhealthy is etcd refusing a membership change that would leave too
// few members connected (ErrUnhealthy, "etcdserver: unhealthy cluster").
var errUnhealthy = errors.New("etcdserver: unhealthy cluster")

// memberList lists the members through the first endpoint that answers;
// serializable, any member answers with or without quorum.
func (g *etcdGateway) memberList(ctx context.Context, linearizable bool) ([]member, error) {
	var resp struct {
		Members []member `json:"members"`
	}
	err := g.callAny(ctx, "/v3/cluster/member/list", map[string]bool{"linearizable": linearizable}, &resp)
	return resp.Members, err
}

// memberRemove removes the member id.
func (g *etcdGateway) memberRemove(ctx context.Context, id uint64) error {
	return g.callAny(ctx, "/v3/cluster/member/remove", map[string]string{"ID": fmt.Sprint(id)}, nil)
}

// leader is the leader the member at endpoint knows of, 0 for none.
func (g *etcdGateway) leader(ctx context.Context, endpoint string) (uint64, error) {
	var resp struct {
		Leader uint64 `json:"leader,string"`
	}
	err := g.call(ctx, endpoint, "/v3/maintenance/status", struct{}{}, &resp)
	return resp.Leader, err
}

// callAny calls the endpoints in turn until one answers; an answer that is
// an error from etcd itself ends the search.
func (g *etcdGateway) callAny(ctx context.Context, path string, req, resp any) error {
	var errs []error
	for _, ep := range g.endpoints {
		err := g.call(ctx, ep, path, req, resp)
		var etcdErr *etcdError
		if err == nil || errors.As(err, &etcdErr) {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// etcdError is an error etcd answered (not a transport failure).
type etcdError struct {
	status int
	msg    string
}

func (e *etcdError) Error() string { return e.msg }

func (e *etcdError) Is(target error) bool {
	return target == errUnhealthy && strings.Contains(e.msg, "unhealthy cluster")
}

// maxReply bounds what is read of an answer: a member list of a few
// members is a few KiB.
const maxReply = 1 << 20

func (g *etcdGateway) call(ctx context.Context, endpoint, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	res, err := g.http.Do(r)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", endpoint, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxReply))
	if err != nil {
		return fmt.Errorf("etcd %s: %w", endpoint, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = res.Status
		}
		return &etcdError{status: res.StatusCode, msg: fmt.Sprintf("etcd %s%s: %s", endpoint, path, e.Message)}
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("etcd %s%s: %w", endpoint, path, err)
	}
	return nil
}

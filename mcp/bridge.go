package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/c360dev/c360"
)

// A bridge serves MCP over stdio for a desktop assistant and forwards every
// tool call to a c360 server's /mcp endpoint with an API key, so that the
// desktop holds only that key: no database credentials, no provider
// secrets. The key is then the whole of what the desktop can do, as it is
// for any API client.
//
// It is an MCP server on stdio whose tools are those of an MCP client
// session to the remote, not a relay of JSON-RPC messages between the two
// transports. The SDK's client keeps its protocol state (negotiated version,
// session and per-request headers) to itself, and fills it in only for
// sessions it initializes; a relay would bypass it. The remote's tools,
// schemas, instructions and results (tool errors included) pass through
// unchanged.

// bridgeConnectTimeout bounds the start: connecting to the remote and
// listing its tools.
const bridgeConnectTimeout = 30 * time.Second

// BridgeConfig is what Bridge needs.
type BridgeConfig struct {
	// URL is the remote c360's MCP endpoint, such as
	// https://c360.example.com/mcp (see BridgeEndpoint).
	URL string
	// Key is the API key every call acts with. It is sent as /mcp expects
	// it, Authorization: Bearer <key>, to URL's origin and nowhere else.
	Key string
	// Logger receives the bridge's errors; nil means slog.Default(). The
	// key is never logged.
	Logger *slog.Logger
	// Version is reported to the remote in the initialize handshake.
	Version string
}

// BridgeEndpoint checks raw as the URL of a c360 MCP endpoint and returns
// it, with the path /mcp when raw has none. The key travels in a header, so
// plain http is refused except to a loopback host (localhost, 127.0.0.0/8,
// ::1), where it never crosses a network.
func BridgeEndpoint(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" || u.Opaque != "" {
		// The value is not echoed: a mistyped setting may hold anything.
		return "", c360.Errorf(c360.EINVALID, "not an absolute URL: want the c360 server's MCP endpoint, such as https://c360.example.com/mcp")
	}
	if u.User != nil {
		return "", c360.Errorf(c360.EINVALID, "the URL must not carry credentials: the bridge sends C360_API_KEY as a Bearer token")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", c360.Errorf(c360.EINVALID, "refusing http://%s: the API key would travel in clear; use https (plain http is allowed only to localhost, 127.0.0.1 or ::1)", u.Host)
		}
	default:
		return "", c360.Errorf(c360.EINVALID, "unsupported URL scheme %q: want https", truncate(u.Scheme, 20))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/mcp"
	}
	u.Fragment = ""
	return u.String(), nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Bridge serves one MCP session over in and out (a desktop assistant runs
// `c360 mcp --url` and talks over its stdin and stdout) until in ends or ctx
// is cancelled, forwarding every tool call to the c360 server at cfg.URL.
//
// It connects first, and fails without serving when the server cannot be
// reached (an error naming the URL and the cause) or refuses the key
// (EUNAUTHENTICATED). A key refused later, once revoked, fails each call
// that follows with an UNAUTHENTICATED tool error, and Bridge returns the
// same error when the session ends.
func Bridge(ctx context.Context, cfg BridgeConfig, in io.Reader, out io.Writer) error {
	endpoint, err := BridgeEndpoint(cfg.URL)
	if err != nil {
		return err
	}
	if cfg.Key == "" {
		return c360.Errorf(c360.EUNAUTHENTICATED, "C360_API_KEY is not set: the bridge acts with an API key")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	u, _ := url.Parse(endpoint)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	b := &bridge{endpoint: endpoint, log: cfg.Logger,
		auth: &bearerTransport{origin: u.Scheme + "://" + u.Host, key: cfg.Key, next: transport}}
	httpClient := &http.Client{
		Transport: b.auth,
		// An MCP endpoint answers where it is asked. Following a redirect
		// would re-send the key wherever the answer points.
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			return fmt.Errorf("redirected to %s; set the URL to the endpoint itself", req.URL.Redacted())
		},
	}

	cctx, cancel := context.WithTimeout(ctx, bridgeConnectTimeout)
	defer cancel()
	client := sdk.NewClient(&sdk.Implementation{Name: "c360-bridge", Version: cfg.Version}, &sdk.ClientOptions{Logger: cfg.Logger})
	// c360's /mcp is stateless and sends nothing unasked: no standalone
	// stream to hold open.
	remote, err := client.Connect(cctx, &sdk.StreamableClientTransport{Endpoint: endpoint, HTTPClient: httpClient,
		DisableStandaloneSSE: true}, nil)
	if err != nil {
		return b.connectError(ctx, err)
	}
	defer remote.Close()
	b.remote = remote
	var tools []*sdk.Tool
	for tool, err := range remote.Tools(cctx, nil) {
		if err != nil {
			return b.connectError(ctx, fmt.Errorf("list tools: %w", err))
		}
		tools = append(tools, tool)
	}
	cancel()

	init := remote.InitializeResult()
	info := &sdk.Implementation{Name: "c360", Version: cfg.Version}
	if init.ServerInfo != nil {
		info = init.ServerInfo
	}
	srv := sdk.NewServer(info, &sdk.ServerOptions{Instructions: init.Instructions, Logger: cfg.Logger})
	for _, tool := range tools {
		if err := addTool(srv, tool, b.forward); err != nil {
			b.log.Error("mcp bridge: tool not served", "tool", tool.Name, "error", err)
		}
	}
	t := &sdk.IOTransport{Reader: io.NopCloser(in), Writer: nopWriteCloser{out}}
	if err := srv.Run(ctx, t); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("serve mcp over stdio: %w", err)
	}
	if b.auth.refused.Load() {
		return b.refusal()
	}
	return nil
}

// addTool serves the remote's tool. The SDK panics on a tool it would not
// serve (a schema that is not an object): a remote's malformed tool is
// left out rather than end the bridge.
func addTool(srv *sdk.Server, tool *sdk.Tool, h sdk.ToolHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	srv.AddTool(tool, h)
	return nil
}

// bridge is one running bridge: the session to the remote and its key.
type bridge struct {
	endpoint   string
	log        *slog.Logger
	auth       *bearerTransport
	remote     *sdk.ClientSession
	logRefusal sync.Once
}

// forward runs a tool call on the remote and answers what the remote
// answered: its result, its tool error, or its protocol error. Only a
// failure to get an answer (the SDK's transport rejection among them,
// codeRejected) is the bridge's own, logged, and a tool error whose text
// starts with a code as c360's refusals do.
//
// The call's _meta is not forwarded: it holds the stdio session's
// protocol fields, which are not the remote session's, and a progress
// token no remote notification would be relayed to.
func (b *bridge) forward(ctx context.Context, req *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
	res, err := b.remote.CallTool(ctx, &sdk.CallToolParams{Name: req.Params.Name, Arguments: req.Params.Arguments})
	if err == nil {
		return res, nil
	}
	var werr *jsonrpc.Error
	switch {
	case b.auth.refused.Load():
		b.logRefusal.Do(func() { b.log.Error("mcp bridge: " + c360.ErrorMessage(b.refusal())) })
		return toolError(b.refusal()), nil
	case errors.As(err, &werr) && werr.Code != codeRejected:
		// The remote's own JSON-RPC error. The SDK wraps one a non-2xx
		// answer carried before its rejection, so it is found first.
		return nil, werr
	case ctx.Err() != nil:
		return nil, ctx.Err()
	}
	b.log.Error("mcp bridge: call", "tool", req.Params.Name, "error", err)
	return toolError(c360.Errorf(c360.EUNAVAILABLE, "c360 at %s did not answer: %v", b.endpoint, err)), nil
}

// codeRejected is the code of the error go-sdk's Streamable HTTP client
// wraps a request's failure to reach the remote in (internal/jsonrpc2's
// ErrRejected, -32005 "rejected by transport": connection refused, a
// transient 5xx, a closed stream), so that the session survives it. It is
// a *jsonrpc.Error, but the remote never said it: such a call was not
// answered.
const codeRejected = -32005

// refusal is the error of a key the remote refused with 401.
func (b *bridge) refusal() error {
	return c360.Errorf(c360.EUNAUTHENTICATED, "c360 at %s refused C360_API_KEY (401 Unauthorized): the key is unknown "+
		"or revoked; issue another with `c360 apikey create --role assistant` and restart the bridge", b.endpoint)
}

// connectError explains a failed start.
func (b *bridge) connectError(ctx context.Context, err error) error {
	if b.auth.refused.Load() {
		return b.refusal()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("connect to c360's MCP endpoint at %s: %w", b.endpoint, err)
}

// toolError is err as a tool error, its text led by the code as c360's own
// tool errors are (ToolError).
func toolError(err error) *sdk.CallToolResult {
	text := (&ToolError{Code: c360.ErrorCode(err), Message: c360.ErrorMessage(err)}).Error()
	return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: text}}}
}

// bearerTransport sends the API key as /mcp expects it, Authorization:
// Bearer <key>, on requests to origin, and notes a 401: the server refused
// the key, which no retry mends.
type bearerTransport struct {
	origin  string
	key     string
	next    http.RoundTripper
	refused atomic.Bool
}

func (t *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme+"://"+r.URL.Host == t.origin {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+t.key)
	}
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		t.refused.Store(true)
	}
	return resp, err
}

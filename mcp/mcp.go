// Package mcp serves c360 to AI assistants over the Model Context Protocol,
// with github.com/modelcontextprotocol/go-sdk: Streamable HTTP at /mcp, and
// stdio for desktop assistants (`c360 mcp`). Bridge serves stdio with only
// an API key, forwarding to a remote /mcp (`c360 mcp --url`).
//
// The tools add no authorization of their own. Each runs one GraphQL
// operation in-process, through the server's own /graphql handler, with the
// caller's API key: the same authentication, roles (@hasRole), masking
// (@pii), audit log, limits and error codes as any GraphQL client, by
// construction. There is no network hop; the operation is an in-memory
// request to the same handler.
package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/c360dev/c360"
)

// Config is what the MCP server needs from the wiring.
type Config struct {
	// GraphQL serves POST /graphql: the c360 server's handler. Tools execute
	// their operations through it.
	GraphQL http.Handler
	// Auth authenticates the Bearer key of /mcp requests and of stdio.
	Auth c360.APIKeyService
	// Authenticate, when set, authenticates the Bearer key of an /mcp
	// request in Auth's stead (server.AuthenticateRequest, which limits
	// per client address the keys that fail, as /graphql does). It may
	// refuse with ERATELIMITED, Retry-After set on w.
	Authenticate func(w http.ResponseWriter, r *http.Request, key string) (*c360.Principal, error)
	// StatusOf maps a domain error to an HTTP status (server.StatusOf).
	StatusOf func(error) int
	// Logger receives errors; nil means slog.Default(). Keys are never logged.
	Logger *slog.Logger
	// Version is reported to clients in the initialize handshake.
	Version string
	// MaxBodyBytes bounds an /mcp request body; 0 means 1 MiB, as /graphql.
	MaxBodyBytes int64
}

// Server is c360's MCP server.
type Server struct {
	cfg Config
}

// New returns an MCP server over cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.StatusOf == nil {
		cfg.StatusOf = func(error) int { return http.StatusInternalServerError }
	}
	return &Server{cfg: cfg}
}

// instructions tell the model what the server is for.
const instructions = `c360 is a customer-360 store. Before answering a customer, call get_customer_context with
their channel address (type "phone" or "email" and the value) to learn who they are, whether they may be
messaged on each channel, what they said lately on every channel, what they did, and what earlier assistants
learned. Record durable facts you learn with record_observation. Personal data may be masked (j***@example.com,
+1******0100) depending on your key: never try to guess masked values.`

// credentials returns the Authorization header a tool call runs with.
type credentials func(req *sdk.CallToolRequest) string

// newSDKServer builds the MCP server with c360's tools; creds decides whose
// key each call runs with.
func (s *Server) newSDKServer(creds credentials) *sdk.Server {
	srv := sdk.NewServer(&sdk.Implementation{Name: "c360", Title: "c360 customer 360", Version: s.cfg.Version},
		&sdk.ServerOptions{Instructions: instructions, Logger: s.cfg.Logger})
	s.addTools(srv, creds)
	return srv
}

// Handler returns the Streamable HTTP handler to mount at /mcp. Every
// request must carry Authorization: Bearer <apiKey>; without a valid key it
// is refused with 401 before MCP sees it. The handler is stateless: no
// session lives in this process, so any replica serves any request, and each
// tool call runs with the key of the request that carries it.
func (s *Server) Handler() http.Handler {
	srv := s.newSDKServer(func(req *sdk.CallToolRequest) string {
		if req.Extra == nil || req.Extra.Header == nil {
			return ""
		}
		return req.Extra.Header.Get("Authorization")
	})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{
		Stateless:           true,
		JSONResponse:        true,
		Logger:              s.cfg.Logger,
		MaxRequestBodyBytes: s.cfg.MaxBodyBytes,
	})
	return s.authenticate(h)
}

// ServeStdio serves one MCP session over in and out (a desktop assistant
// runs `c360 mcp` and talks over its stdin and stdout) until in ends or ctx
// is cancelled. Every tool call runs with key, which is checked first.
func (s *Server) ServeStdio(ctx context.Context, key string, in io.Reader, out io.Writer) error {
	if key == "" {
		return c360.Errorf(c360.EUNAUTHENTICATED, "C360_API_KEY is not set: the MCP server acts with an API key")
	}
	if _, err := s.cfg.Auth.Authenticate(ctx, key); err != nil {
		return fmt.Errorf("C360_API_KEY: %w", err)
	}
	srv := s.newSDKServer(func(*sdk.CallToolRequest) string { return "Bearer " + key })
	t := &sdk.IOTransport{Reader: io.NopCloser(in), Writer: nopWriteCloser{out}}
	if err := srv.Run(ctx, t); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("serve mcp over stdio: %w", err)
	}
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// authenticate refuses an /mcp request without a valid Bearer API key, with
// the same codes as /graphql: 401 UNAUTHENTICATED, 429 RATE_LIMITED from an
// address that keeps presenting bad keys (Config.Authenticate), or 503
// when the store cannot tell.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			s.refuse(w, c360.Errorf(c360.EUNAUTHENTICATED, "missing API key: send Authorization: Bearer <key>"))
			return
		}
		var (
			p   *c360.Principal
			err error
		)
		if s.cfg.Authenticate != nil {
			p, err = s.cfg.Authenticate(w, r, key)
		} else {
			p, err = s.cfg.Auth.Authenticate(r.Context(), key)
		}
		if err != nil {
			if c360.ErrorCode(err) == c360.EINTERNAL {
				s.cfg.Logger.Error("mcp: authenticate", "error", err)
			}
			s.refuse(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(c360.NewContextWithPrincipal(r.Context(), p)))
	})
}

// refuse answers a request refused before MCP, as /graphql answers one.
func (s *Server) refuse(w http.ResponseWriter, err error) {
	status := s.cfg.StatusOf(err)
	code := c360.ErrorCode(err)
	if code == c360.EUNAUTHENTICATED {
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="c360"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{
		"message": c360.ErrorMessage(err), "extensions": map[string]any{"code": code}}}})
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// ToolError is a GraphQL error a tool call ended with: its extensions.code
// and message, as a GraphQL client would see them.
type ToolError struct {
	Code    string
	Message string
}

// Error implements error; the model reads it as the tool's result.
func (e *ToolError) Error() string { return e.Code + ": " + e.Message }

// execute runs one GraphQL operation through the server's /graphql handler
// with authorization, and returns its data as the handler wrote it. Any
// GraphQL error fails the call with a *ToolError.
//
// A tool that hands the data on returns these bytes as its result, and one
// that reshapes it decodes it with c360.UnmarshalExact: either way a number
// keeps its digits (a trait of 12345678901234567 would read back from a
// float64 as 12345678901234568).
func (s *Server) execute(ctx context.Context, authorization, query string, vars map[string]any) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars, "operationName": operationName(query)})
	if err != nil {
		return nil, fmt.Errorf("encode graphql request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/graphql", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build graphql request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", authorization)
	req.RemoteAddr = "127.0.0.1:0" // in-process
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	s.cfg.GraphQL.ServeHTTP(rec, req)
	var resp struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("decode graphql response (status %d): %w", rec.status, err)
	}
	if len(resp.Errors) > 0 {
		e := resp.Errors[0]
		if e.Extensions.Code == "" {
			e.Extensions.Code = c360.EINTERNAL
		}
		return nil, &ToolError{Code: e.Extensions.Code, Message: e.Message}
	}
	if rec.status != http.StatusOK {
		return nil, fmt.Errorf("graphql answered status %d", rec.status)
	}
	if len(resp.Data) == 0 || string(resp.Data) == "null" {
		return nil, fmt.Errorf("graphql answered no data")
	}
	return resp.Data, nil
}

// operationName returns the name of the one operation in query ("query
// LookupCustomer(...)" -> LookupCustomer); the audit log records it.
func operationName(query string) string {
	f := strings.FieldsFunc(query, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// recorder is the in-memory http.ResponseWriter of an in-process operation.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360/graph"
)

// postTransport answers as gqlgen's transport.POST does: the same status,
// Content-Type and JSON for every Accept header and every kind of
// operation, whether it takes the request authenticate decoded or decodes
// the body itself.
func TestPostTransportAnswersAsGqlgens(t *testing.T) {
	es := graph.NewExecutableSchema(graph.Config{})
	serve := func(tr graphql.Transport) *handler.Server {
		h := handler.New(es)
		h.AddTransport(tr)
		return h
	}
	theirs := serve(transport.POST{})
	ours := serve(postTransport{})
	// What authenticate does before the transport runs.
	decoded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := new(bytes.Buffer)
		body.ReadFrom(r.Body)
		p, err := decodeParams(body.Bytes())
		if err != nil {
			t.Fatalf("decodeParams(%s): %v", body, err)
		}
		ours.ServeHTTP(w, r.WithContext(withParams(r.Context(), p)))
	})
	accepts := []string{
		"", "application/json", "application/graphql-response+json", "*/*", "application/*",
		"text/html", "application/graphql-response+json, application/json",
		"application/json;q=0.9, application/graphql-response+json", ";;;, application/graphql-response+json",
	}
	bodies := []string{
		`{"query":"{ __typename }"}`,
		`{"query":"{ nope }"}`, // a validation error
		`{"query":"{"}`,        // a parse error
		`{"query":"query A { __typename } query B { __typename }"}`,
		`{"query":"query A { __typename } query B { __typename }","operationName":"B"}`,
		`{"query":"query($n: Int!) { __typename }","variables":{"n":"x"}}`,
		`{"query":""}`,
	}
	for _, accept := range accepts {
		for _, body := range bodies {
			answer := func(h http.Handler) *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				return w
			}
			want := answer(theirs)
			for name, h := range map[string]http.Handler{"decoded by authenticate": decoded, "decoded here": ours} {
				got := answer(h)
				if got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
					t.Errorf("Accept %q, %s (%s): status %d, %s; gqlgen's %d, %s", accept, body, name,
						got.Code, got.Header().Get("Content-Type"), want.Code, want.Header().Get("Content-Type"))
				}
				if !sameJSON(t, got.Body.Bytes(), want.Body.Bytes()) {
					t.Errorf("Accept %q, %s (%s): answered %s, gqlgen %s", accept, body, name, got.Body, want.Body)
				}
			}
		}
	}
}

// writeResponse writes what json.Marshal writes, but the data as it was
// rendered, not compacted again.
func TestWriteResponse(t *testing.T) {
	yes := true
	cases := []*graphql.Response{
		{Data: json.RawMessage(`{"a": {"b": [1, 2]}, "c": "<&>"}`)},
		{Errors: gqlerror.List{{Message: "boom", Path: ast.Path{ast.PathName("a")}, Extensions: map[string]any{"code": "INTERNAL"}}}},
		{Errors: gqlerror.List{{Message: `"data":null`}}, Data: json.RawMessage(`{"a": null}`)},
		{Data: json.RawMessage(`{"x": 1}`), Label: "l", Path: ast.Path{ast.PathName("p"), ast.PathIndex(2)}, HasNext: &yes,
			Extensions: map[string]any{"complexity": 3, "html": "<b>"}},
		{},
	}
	for _, resp := range cases {
		var got bytes.Buffer
		writeResponse(&got, resp)
		want, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, got.Bytes(), want) {
			t.Errorf("writeResponse wrote %s, json.Marshal %s", got.Bytes(), want)
		}
		if len(resp.Data) > 0 && !bytes.Contains(got.Bytes(), []byte(`"data":`+string(resp.Data))) {
			t.Errorf("writeResponse wrote %s: the data is not as rendered (%s)", got.Bytes(), resp.Data)
		}
	}
}

// sameJSON reports whether a and b are valid JSON of the same value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Errorf("not JSON: %s: %v", a, err)
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Errorf("not JSON: %s: %v", b, err)
		return false
	}
	return reflect.DeepEqual(va, vb)
}

package server

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360"
)

// postTransport is GraphQL over HTTP POST: gqlgen's transport.POST, with
// its content negotiation and statuses, but two costs less on every query.
//   - The body is decoded once. authenticate decodes and checks it
//     (decodeParams), and hands the result on in the request's context;
//     transport.POST would decode it again.
//   - The answer's data is written as the executor rendered it. json.Marshal
//     of a graphql.Response scans and compacts its already rendered data
//     once more: 2–3% of a customer-360's server CPU.
//
// And a subscription is refused with 400: a plain POST cannot stream it
// (SSE, registered before this transport, takes those that accept
// text/event-stream).
type postTransport struct{}

var _ graphql.Transport = postTransport{}

// Supports claims what transport.POST claims.
func (postTransport) Supports(r *http.Request) bool { return transport.POST{}.Supports(r) }

// Do runs the operation of a POST.
func (postTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	contentType := responseContentType(r.Header.Get("Accept"))
	w.Header().Set("Content-Type", contentType)
	start := graphql.Now()
	params, ok := ctx.Value(paramsKey{}).(*graphql.RawParams)
	if !ok {
		// Not through authenticate (which every POST /graphql passes):
		// decoded here, with the same refusals.
		body, err := io.ReadAll(r.Body)
		if err == nil {
			params, err = decodeParams(body)
		}
		if err != nil {
			writeGraphQLError(w, http.StatusBadRequest, err)
			return
		}
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	rc, opErr := exec.CreateOperationContext(ctx, params)
	if opErr != nil {
		w.WriteHeader(operationErrorStatus(contentType, opErr))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(ctx, rc), opErr))
		return
	}
	if rc.Operation != nil && rc.Operation.Operation == ast.Subscription {
		// transport.POST would hold the request open until the first
		// change, and answer only that one.
		writeGraphQLError(w, http.StatusBadRequest, c360.Errorf(c360.EINVALID,
			"a subscription streams: open it over a websocket (graphql-transport-ws), or POST it with Accept: text/event-stream"))
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, rc)
	writeResponse(w, responses(ctx))
}

// paramsKey carries the request authenticate decoded to postTransport.
type paramsKey struct{}

func withParams(ctx context.Context, p *graphql.RawParams) context.Context {
	return context.WithValue(ctx, paramsKey{}, p)
}

const (
	mediaJSON            = "application/json"
	mediaGraphQLResponse = "application/graphql-response+json"
	mediaAnyApplication  = "application/*"
	mediaAnything        = "*/*"
)

// responseContentType picks the answer's media type from Accept as
// transport.POST does: application/json when Accept is empty or names it
// (or a wildcard) first, application/graphql-response+json when that comes
// first, and also when nothing in Accept is either.
func responseContentType(accept string) string {
	if accept == "" {
		return mediaJSON
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case mediaAnything, mediaAnyApplication, mediaJSON:
			return mediaJSON
		case mediaGraphQLResponse:
			return mediaGraphQLResponse
		}
	}
	return mediaGraphQLResponse
}

// operationErrorStatus is the status of an operation refused before it ran
// (a parse or validation error), as transport.POST answers it: 422 under
// application/json, 400 under application/graphql-response+json, and 200
// for an error that is not the request's fault.
func operationErrorStatus(contentType string, errs gqlerror.List) int {
	if errcode.GetErrorKind(errs) != errcode.KindProtocol {
		return http.StatusOK
	}
	if contentType == mediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

// writeResponse writes resp as json.Marshal would, except that the data,
// which the executor rendered as compact JSON, is copied as it is.
func writeResponse(w io.Writer, resp *graphql.Response) {
	data := resp.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	// The fields after data, by json.Marshal: with errors and data empty,
	// it renders {"data":null followed by them.
	rest := *resp
	rest.Errors, rest.Data = nil, nil
	tail, err := json.Marshal(&rest)
	if err != nil {
		panic(err) // as transport.POST: the handler's recover answers it
	}
	tail = tail[len(`{"data":null`):]
	b := make([]byte, 0, len(data)+len(tail)+64)
	b = append(b, '{')
	if len(resp.Errors) > 0 {
		errs, err := json.Marshal(resp.Errors)
		if err != nil {
			panic(err)
		}
		b = append(append(append(b, `"errors":`...), errs...), ',')
	}
	b = append(append(append(b, `"data":`...), data...), tail...)
	w.Write(b)
}

// getTransport is GraphQL over HTTP GET: gqlgen's transport.GET, with
// the statuses and content negotiation of postTransport, and an operation
// that is not a query refused as GraphQL over HTTP says, 405 with Allow:
// POST and a code (transport.GET answers 406 without one). The refusal
// comes after CreateOperationContext, so a persisted operation sent by its
// hash alone is known by the same lookup (the caller's workspace's
// persisted queries) and parsed once, through the same cache, as any other.
// checkTransport has refused a query string that does not parse and
// variables or extensions that are not JSON objects.
type getTransport struct{}

var _ graphql.Transport = getTransport{}

// Supports claims what transport.GET claims.
func (getTransport) Supports(r *http.Request) bool { return transport.GET{}.Supports(r) }

// Do runs the operation of a GET.
func (getTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	contentType := responseContentType(r.Header.Get("Accept"))
	w.Header().Set("Content-Type", contentType)
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeGraphQLError(w, http.StatusBadRequest, c360.Errorf(c360.EINVALID, "the URL's query string is not valid"))
		return
	}
	params := &graphql.RawParams{Query: query.Get("query"), OperationName: query.Get("operationName"), Headers: r.Header}
	params.ReadTime.Start = graphql.Now()
	for _, p := range []struct {
		key string
		dst *map[string]any
	}{{"variables", &params.Variables}, {"extensions", &params.Extensions}} {
		if v := query.Get(p.key); v != "" {
			if err := json.Unmarshal([]byte(v), p.dst); err != nil {
				writeGraphQLError(w, http.StatusBadRequest, c360.Errorf(c360.EINVALID, "%s must be a JSON object", p.key))
				return
			}
		}
	}
	params.ReadTime.End = graphql.Now()
	rc, opErr := exec.CreateOperationContext(ctx, params)
	if rc != nil && rc.Doc != nil {
		if err := notOverGET(rc.Doc, params.OperationName); err != nil {
			writeGraphQLError(w, StatusOf(err), err)
			return
		}
	}
	if opErr != nil {
		w.WriteHeader(operationErrorStatus(contentType, opErr))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(ctx, rc), opErr))
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, rc)
	writeResponse(w, responses(ctx))
}

// notOverGET refuses the document if the operation a GET would run of it
// is not a query: the operation named, or, with none named, any of them
// (a document of several needs a name, and one that is not a query would
// not run over GET with one either). GraphQL over HTTP answers it 405, and
// POST serves it.
func notOverGET(doc *ast.QueryDocument, operationName string) error {
	for _, op := range doc.Operations {
		if op.Operation != ast.Query && (operationName == "" || op.Name == operationName) {
			return errMethod{c360.Errorf(c360.EINVALID, "GET /graphql runs queries only; send %s operations with POST", op.Operation), http.MethodPost}
		}
	}
	return nil
}

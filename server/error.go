package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/c360dev/c360"
)

// statuses maps domain error codes to HTTP statuses, in one table.
var statuses = map[string]int{
	c360.EUNAUTHENTICATED: http.StatusUnauthorized,
	c360.EFORBIDDEN:       http.StatusForbidden,
	c360.ENOTFOUND:        http.StatusNotFound,
	c360.EINVALID:         http.StatusBadRequest,
	c360.ECONFLICT:        http.StatusConflict,
	c360.ERATELIMITED:     http.StatusTooManyRequests,
	c360.EUNAVAILABLE:     http.StatusServiceUnavailable,
	c360.EINTERNAL:        http.StatusInternalServerError,
}

// StatusOf returns the HTTP status for err's code.
func StatusOf(err error) int {
	var tooLarge errTooLarge
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	var timeout errBodyTimeout
	if errors.As(err, &timeout) {
		return http.StatusRequestTimeout
	}
	var method errMethod
	if errors.As(err, &method) {
		return http.StatusMethodNotAllowed
	}
	if s, ok := statuses[c360.ErrorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// writeGraphQLError answers a request refused before GraphQL execution, in
// the GraphQL response shape so clients read one format.
// WriteGraphQLError answers err in GraphQL's error shape, with its status
// (and Retry-After on a 503), for a refusal made before GraphQL runs, by
// this package or by the process that serves it (c360 serve while it
// starts).
func WriteGraphQLError(w http.ResponseWriter, status int, err error) {
	writeGraphQLError(w, status, err)
}

func writeGraphQLError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	var method errMethod
	if status == http.StatusMethodNotAllowed && errors.As(err, &method) {
		w.Header().Set("Allow", method.allow)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{
			"message":    c360.ErrorMessage(err),
			"extensions": map[string]any{"code": c360.ErrorCode(err)},
		}},
	})
}

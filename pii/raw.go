package pii

// MayHold reports whether the JSON object raw may hold personal data. It
// is false only when Find would find none in it, so that a caller can hand
// an object on as it is stored without decoding it first; when it is true
// the caller decodes the object and asks Find or JSON.
//
// It reads every key and every string value as Find sees them: a key whose
// name is personal (KeyKind), whatever its value, and a string, key or
// value, that may hold an email address or a phone number (Text, Key),
// wherever it sits, count. A string with an escape sequence in it, or
// input it cannot read to the end, counts as possibly personal.
func MayHold(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '"' {
			continue
		}
		end := i + 1
		for end < len(raw) && raw[end] != '"' {
			if raw[end] == '\\' {
				return true
			}
			end++
		}
		if end == len(raw) {
			return true
		}
		s := string(raw[i+1 : end])
		next := end + 1
		for next < len(raw) && (raw[next] == ' ' || raw[next] == '\t' || raw[next] == '\n' || raw[next] == '\r') {
			next++
		}
		if mayHoldText(s) {
			return true
		}
		if next < len(raw) && raw[next] == ':' && KeyKind(s) != "" {
			return true
		}
		i = end
	}
	return false
}

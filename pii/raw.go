package pii

// MayHold reports whether the JSON object raw may hold personal data. It
// is false only when Find would find none in it, so that a caller can hand
// an object on as it is stored without decoding it first; when it is true
// the caller decodes the object and asks Find or JSON.
//
// It reads every key and every string value as Find sees them: a key whose
// name is personal (KeyKind), whatever its value, and a string, key or
// value, that holds an email address or a phone number as Find reads it
// (KeyText: a number alone, such as 1700000000, is not a phone number),
// wherever it sits, count, and so does a WhatsApp message id (wamid.),
// which encodes the customer's number. A string with an escape sequence
// in it, or input it cannot read to the end, counts as possibly personal.
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
		// A WhatsApp message id holds the customer's number in base64,
		// which no scan reads (whatsAppID).
		if whatsAppID(s) {
			return true
		}
		next := end + 1
		for next < len(raw) && (raw[next] == ' ' || raw[next] == '\t' || raw[next] == '\n' || raw[next] == '\r') {
			next++
		}
		// Most strings hold nothing a scan can find (mayHoldText); those
		// that may are read as Find reads them, so that a number alone
		// (a Unix time as a key, an EAN as a value) does not send every
		// object that holds one to be decoded, found, and audited.
		if mayHoldText(s) {
			if _, kinds := KeyText(s, false); len(kinds) > 0 {
				return true
			}
		}
		if next < len(raw) && raw[next] == ':' && KeyKind(s) != "" {
			return true
		}
		i = end
	}
	return false
}

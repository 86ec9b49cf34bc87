package server_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// A WhatsApp message of a type c360 does not read keeps the item as Meta
// sent it (property item), and a Flow's reply its fields too: the sender's
// number in the item's from, a wamid, the names and numbers of a shared
// contact and the fields a customer filled in a Flow are masked for an
// assistant without the pii scope as the same data is elsewhere, and read
// whole with it.
func TestKeptWhatsAppItemMaskedForAssistants(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	secret, masked, clear, wamid := whatsAppAssistants(t, e)
	const number = whatsAppNumber
	now := time.Now().Unix()
	messages := []string{
		fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"%d","type":"order","context":{"from":"15550783881","id":%q},"order":{"catalog_id":"c1","product_items":[{"product_retailer_id":"sku-1","quantity":2}]}}`,
			number, wamid("3A4A6599AEE038101001"), now, wamid("3A4A6599AEE038101000")),
		fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"%d","type":"contacts","contacts":[{"name":{"formatted_name":"Grace Hopper","first_name":"Grace"},"phones":[{"phone":"+1 (212) 555-0111","wa_id":"12125550111"}],"emails":[{"email":"grace@example.com"}]}]}`,
			number, wamid("3A4A6599AEE038101002"), now),
		fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"%d","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"name":"signup","body":"Sent","response_json":"{\"full_name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"phone\":\"+12125550122\"}"}}}`,
			number, wamid("3A4A6599AEE038101003"), now),
	}
	payload := `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":` +
		`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},` +
		`"contacts":[{"profile":{"name":"Kerry"},"wa_id":"` + number + `"}],"messages":[` + strings.Join(messages, ",") + `]}}]}]}`
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(payload))
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/whatsapp/"+workspaceSlug(t, e), strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("whatsapp webhook: status %d", resp.StatusCode)
	}
	cust := ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+" + number}}, nil)

	const q = `query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { properties } } } }
		customerContext(id: $id) { text } }`
	data := func(key string) string {
		t.Helper()
		r := gql(t, e.srv, key, q, map[string]any{"id": fmt.Sprint(cust)})
		r.ok(t, nil)
		var b bytes.Buffer
		if err := json.Compact(&b, r.Data); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	m := data(masked)
	for _, leak := range []string{"5550100", "5550111", "5550122", "Grace", "grace@", "Lovelace", "ada@", "3A4A6599"} {
		if strings.Contains(m, leak) {
			t.Errorf("assistant without pii scope reads %q: %s", leak, m)
		}
	}
	for _, want := range []string{`"type":"order"`, `"product_retailer_id":"sku-1"`, `"id":"wamid.***"`, `"flowName":"signup"`} {
		if !strings.Contains(m, want) {
			t.Errorf("masked answer lacks %s: %s", want, m)
		}
	}
	c := data(clear)
	for _, want := range []string{`"from":"` + number + `"`, "Grace Hopper", "ada@example.com", wamid("3A4A6599AEE038101001")} {
		if !strings.Contains(c, want) {
			t.Errorf("assistant with pii scope does not read %s: %s", want, c)
		}
	}
}

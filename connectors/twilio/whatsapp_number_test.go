package twilio_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// Twilio relays a WhatsApp sender's address as WhatsApp writes it: a
// Mexican mobile with the 1 Mexico no longer dials, an old Brazilian
// mobile without its ninth digit. Each reaches the customer the same
// person's SMS number reaches, and replies go to that number.
func TestInboundWhatsAppNumberForms(t *testing.T) {
	for _, tc := range []struct {
		name, whatsApp, waID, sms string
	}{
		{"Mexico", "whatsapp:+5215512345678", "5215512345678", "+525512345678"},
		{"Brazil", "whatsapp:+552187654321", "552187654321", "+5521987654321"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			wa := inbound("SMwa"+tc.waID, tc.whatsApp, "hola por whatsapp", "WaId", tc.waID)
			if status, _, body := e.webhook(t, e.inboundPath(), wa, authToken); status != http.StatusOK {
				t.Fatalf("WhatsApp from %s: status %d (%s), want 200", tc.whatsApp, status, body)
			}
			if status, _, body := e.webhook(t, e.inboundPath(), inbound("SMsms"+tc.waID, tc.sms, "hola por sms"), authToken); status != http.StatusOK {
				t.Fatalf("SMS from %s: status %d (%s), want 200", tc.sms, status, body)
			}
			if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 1 {
				t.Errorf("customers = %d, want 1", n)
			}
			c := e.customerByPhone(t, tc.sms)
			ids, err := e.db.IdentitiesByCustomers(context.Background(), e.ws, []int64{c.ID})
			if err != nil {
				t.Fatal(err)
			}
			if got := ids[c.ID]; len(got) != 1 || got[0].Value != tc.sms {
				t.Errorf("identities = %+v, want only phone %s", got, tc.sms)
			}
			sms, whatsApp := e.messages(t, c.ID, "sms"), e.messages(t, c.ID, "whatsapp")
			if len(sms) != 1 || len(whatsApp) != 1 || whatsApp[0].Body != "hola por whatsapp" {
				t.Fatalf("sms = %+v, whatsapp = %+v; want one each on customer %d", sms, whatsApp, c.ID)
			}
			var props string
			if err := e.db.Pool.QueryRow(context.Background(), `SELECT properties::text FROM events WHERE workspace_id = $1 AND dedupe_key = $2`,
				e.ws, "SMwa"+tc.waID).Scan(&props); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(props, `"waId": "`+tc.waID+`"`) {
				t.Errorf("properties = %s, want Twilio's WaId kept", props)
			}

			// A reply goes to the customer's number, an address Twilio takes.
			m, r := e.send(t, e.key, c.ID, "whatsapp", "gracias")
			if m == nil {
				t.Fatalf("sendMessage: %s", r.raw)
			}
			reqs := e.twilio.requests()
			if len(reqs) != 1 || reqs[0].Form.Get("To") != "whatsapp:"+tc.sms {
				t.Fatalf("Twilio requests = %+v, want one To whatsapp:%s", reqs, tc.sms)
			}
			// Its status callbacks come back to the address as WhatsApp writes it.
			e.status(t, statusForm(m.ProviderID, "delivered", tc.whatsApp))
			if got := e.message(t, m.ProviderID).Status; got != "delivered" {
				t.Errorf("status = %s, want delivered", got)
			}
		})
	}
}

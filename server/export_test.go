package server

// WebsocketInitPayloads reports the open websocket connections, and how
// many of them still hold their connection_init payload (the API key).
func (s *Server) WebsocketInitPayloads() (open, holding int) {
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	for c := range s.ws.conns {
		open++
		c.mu.Lock()
		if c.initPayload != nil {
			holding++
		}
		c.mu.Unlock()
	}
	return open, holding
}

// Seed 003's `ShopWebSocket` (lib/websocket.ts), transcribed to JavaScript: only the
// TypeScript type annotations are removed; the logic is the seed's, unchanged.

class ShopWebSocket {
  ws = null;
  options;
  handlers = new Map();
  reconnectAttempts = 0;
  isConnected = false;
  messageQueue = [];

  constructor(options) {
    this.options = {
      reconnect: true,
      reconnectInterval: 3000,
      maxReconnectAttempts: 10,
      token: '',
      ...options,
    };
  }

  connect() {
    return new Promise((resolve, reject) => {
      const url = this.options.token
        ? `${this.options.url}?token=${this.options.token}`
        : this.options.url;

      this.ws = new WebSocket(url);

      this.ws.onopen = () => {
        console.log('WebSocket connected');
        this.isConnected = true;
        this.reconnectAttempts = 0;
        this.flushMessageQueue();
        resolve();
      };

      this.ws.onclose = (event) => {
        console.log('WebSocket closed:', event.code, event.reason);
        this.isConnected = false;
        this.handleReconnect();
      };

      this.ws.onerror = (error) => {
        console.error('WebSocket error:', error);
        reject(error);
      };

      this.ws.onmessage = (event) => {
        this.handleMessage(event.data);
      };
    });
  }

  disconnect() {
    this.options.reconnect = false;
    if (this.ws) {
      this.ws.close();
      this.ws = null;
    }
  }

  send(type, payload, id) {
    const message = JSON.stringify({
      type,
      payload,
      id,
      timestamp: new Date().toISOString(),
    });

    if (this.isConnected && this.ws) {
      this.ws.send(message);
    } else {
      this.messageQueue.push(message);
    }
  }

  subscribe(channel) {
    this.send('subscribe', { channel });
  }

  unsubscribe(channel) {
    this.send('unsubscribe', { channel });
  }

  on(type, handler) {
    if (!this.handlers.has(type)) {
      this.handlers.set(type, new Set());
    }
    this.handlers.get(type).add(handler);

    // Return unsubscribe function
    return () => {
      this.handlers.get(type)?.delete(handler);
    };
  }

  off(type, handler) {
    if (handler) {
      this.handlers.get(type)?.delete(handler);
    } else {
      this.handlers.delete(type);
    }
  }

  handleMessage(data) {
    try {
      const message = JSON.parse(data);
      const handlers = this.handlers.get(message.type);

      if (handlers) {
        handlers.forEach((handler) => {
          try {
            handler(message.payload);
          } catch (error) {
            console.error('Handler error:', error);
          }
        });
      }

      // Also emit to wildcard handlers
      const wildcardHandlers = this.handlers.get('*');
      if (wildcardHandlers) {
        wildcardHandlers.forEach((handler) => handler(message));
      }
    } catch (error) {
      console.error('Failed to parse message:', error);
    }
  }

  handleReconnect() {
    if (!this.options.reconnect) return;
    if (this.reconnectAttempts >= this.options.maxReconnectAttempts) {
      console.error('Max reconnect attempts reached');
      return;
    }

    this.reconnectAttempts++;
    console.log(`Reconnecting... (attempt ${this.reconnectAttempts})`);

    setTimeout(() => {
      this.connect().catch(console.error);
    }, this.options.reconnectInterval);
  }

  flushMessageQueue() {
    while (this.messageQueue.length > 0) {
      const message = this.messageQueue.shift();
      if (message && this.ws) {
        this.ws.send(message);
      }
    }
  }
}

export { ShopWebSocket };

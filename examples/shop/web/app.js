/**
 * The storefront: products, a cart, an order form, and the customer's orders, whose status
 * changes live through Server-Sent Events. Plain JS, no build step, no external assets.
 *
 * Live updates follow the gateway's push guarantee: at most once, resumable while the gateway
 * keeps history. So the page never trusts the stream alone: a `reset` event, or a reconnect after
 * the browser gave up, refetches every order; and a status only moves forward, because a push can
 * arrive before the POST that placed the order has answered.
 */

(() => {
  const STATUS_TYPE = 'notifications.order-status';
  /** How far along an order is: a late PENDING never overwrites CONFIRMED. */
  const RANK = { PENDING: 0, CONFIRMED: 1, REJECTED: 2, CANCELLED: 2, SHIPPED: 3 };

  const state = {
    products: [],
    /** sku → quantity */
    cart: new Map(),
    customer: '',
    /** order id → { id, status, total, reason, text } */
    orders: new Map(),
    source: undefined,
    reconnectTimer: undefined,
    backoffMs: 1000,
  };

  const $ = (id) => document.getElementById(id);
  const money = (cents) => `€${(cents / 100).toFixed(2)}`;
  const el = (tag, props = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === 'dataset') Object.assign(node.dataset, value);
      else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  };

  /** fetch JSON; a problem+json answer becomes an Error with its `detail`. */
  async function api(path, init = {}) {
    const response = await fetch(path, {
      ...init,
      headers: {
        accept: 'application/json',
        ...(init.body ? { 'content-type': 'application/json' } : {}),
        ...init.headers,
      },
    });
    const body = await response.json().catch(() => undefined);
    if (!response.ok) {
      throw new Error(body?.detail || body?.title || `The shop answered ${response.status}.`);
    }
    return body;
  }

  function showError(message) {
    $('error').textContent = message;
    $('error').hidden = !message;
  }

  // Products and cart

  async function loadProducts() {
    try {
      state.products = (await api('/api/products')).products;
      renderProducts();
    } catch (error) {
      $('products').replaceChildren(el('li', { className: 'error', textContent: error.message }));
    }
  }

  function renderProducts() {
    $('products').replaceChildren(
      ...state.products.map((p) =>
        el('li', { dataset: { sku: p.sku } }, [
          el('span', { className: 'name', textContent: p.name }),
          el('span', { className: 'price', textContent: money(p.price) }),
          el('button', {
            type: 'button',
            className: 'add',
            textContent: 'Add',
            onclick: () => addToCart(p.sku),
          }),
        ]),
      ),
    );
  }

  function addToCart(sku) {
    state.cart.set(sku, (state.cart.get(sku) ?? 0) + 1);
    renderCart();
  }

  function renderCart() {
    const lines = [...state.cart].map(([sku, quantity]) => {
      const product = state.products.find((p) => p.sku === sku);
      return { sku, quantity, name: product?.name ?? sku, price: product?.price ?? 0 };
    });
    $('cart').replaceChildren(
      ...(lines.length === 0
        ? [el('li', { className: 'muted', textContent: 'Your cart is empty.' })]
        : lines.map((l) =>
            el('li', { dataset: { sku: l.sku } }, [
              el('span', { textContent: `${l.quantity} × ${l.name}` }),
              el('span', { className: 'price', textContent: money(l.price * l.quantity) }),
              el('button', {
                type: 'button',
                className: 'link',
                textContent: 'Remove',
                onclick: () => {
                  state.cart.delete(l.sku);
                  renderCart();
                },
              }),
            ]),
          )),
    );
    $('cart-total').textContent = money(lines.reduce((sum, l) => sum + l.price * l.quantity, 0));
    $('place').disabled = lines.length === 0;
  }

  async function placeOrder(event) {
    event.preventDefault();
    showError('');
    setCustomer($('customer').value.trim());
    const lines = [...state.cart].map(([sku, quantity]) => ({ sku, quantity }));
    $('place').disabled = true;
    try {
      // One key per order: sent again, the same request places nothing new (see README, gateway).
      const customer = state.customer;
      const order = await api('/api/orders', {
        method: 'POST',
        headers: { 'idempotency-key': crypto.randomUUID() },
        body: JSON.stringify({ customer, card: $('card').value.trim(), lines }),
      });
      remember(order.id, customer);
      // The name may have changed while the order was placed: it is listed under its own customer.
      if (state.customer === customer) {
        update(order.id, { status: order.status, total: order.total, reason: order.reason });
      }
      state.cart.clear();
    } catch (error) {
      showError(error.message);
    } finally {
      renderCart();
    }
  }

  // Orders, kept per customer in this browser

  const storageKey = (customer = state.customer) => `parley-shop-orders:${customer}`;

  function rememberedIds(customer = state.customer) {
    try {
      return JSON.parse(localStorage.getItem(storageKey(customer)) ?? '[]');
    } catch {
      return [];
    }
  }

  function remember(id, customer = state.customer) {
    const ids = rememberedIds(customer).filter((x) => x !== id);
    localStorage.setItem(storageKey(customer), JSON.stringify([id, ...ids].slice(0, 50)));
  }

  /** Applies what we learnt about an order; a status (with its reason and text) only moves forward. */
  function update(id, change) {
    const order = state.orders.get(id) ?? { id, status: 'PENDING', total: undefined, reason: null, text: '' };
    const next = { ...order };
    if (change.total !== undefined) next.total = change.total;
    if ((RANK[change.status] ?? 0) >= (RANK[order.status] ?? 0)) {
      next.status = change.status;
      if (change.reason !== undefined) next.reason = change.reason;
      if (change.text !== undefined) next.text = change.text;
    }
    state.orders.set(id, next);
    renderOrders();
  }

  async function refetch(id) {
    // An answer for the customer before a change of name is dropped: until 2026-12-03 it was put
    // in the new customer's list.
    const customer = state.customer;
    try {
      const order = await api(`/api/orders/${encodeURIComponent(id)}`);
      if (state.customer !== customer) return;
      update(id, { status: order.status, total: order.total, reason: order.reason });
    } catch {
      // Unknown here (another shop's data, or gone): the stream will tell us if it moves.
    }
  }

  const refetchAll = () => Promise.all([...state.orders.keys()].map(refetch));

  function renderOrders() {
    const orders = [...state.orders.values()].reverse();
    $('no-orders').hidden = orders.length > 0;
    $('orders').replaceChildren(
      ...orders.map((o) =>
        el('li', { dataset: { orderId: o.id } }, [
          el('span', {
            className: 'order',
            textContent: `Order ${o.id.slice(-8)}${o.total === undefined ? '' : ` · ${money(o.total)}`}`,
          }),
          el('span', { className: `status status-${o.status}`, textContent: o.status }),
          el('span', { className: 'detail', textContent: o.reason ? `Reason: ${o.reason}` : o.text }),
        ]),
      ),
    );
  }

  // Live status

  function setCustomer(name) {
    if (name === state.customer) return;
    state.customer = name;
    state.orders.clear();
    for (const id of rememberedIds())
      state.orders.set(id, { id, status: 'PENDING', total: undefined, reason: null, text: '' });
    renderOrders();
    void refetchAll();
    connect();
  }

  function setLive(on, text) {
    $('live').textContent = text;
    $('live').className = `live ${on ? 'on' : 'off'}`;
  }

  function connect() {
    state.source?.close();
    clearTimeout(state.reconnectTimer);
    if (!state.customer) return setLive(false, 'not connected');
    // The demo gateway picks the audience from ?customer=; a real one from the login.
    const url = `/events?types=${STATUS_TYPE}&customer=${encodeURIComponent(state.customer)}`;
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => {
      state.backoffMs = 1000;
      setLive(true, 'live');
    };
    source.addEventListener(STATUS_TYPE, (event) => {
      const step = JSON.parse(event.data);
      if (step.customer !== state.customer) return;
      const known = state.orders.has(step.orderId);
      update(step.orderId, { status: step.status, reason: step.reason, text: step.text });
      if (!known) void refetch(step.orderId);
    });
    // The gateway no longer has what we missed: what we show may be stale.
    source.addEventListener('reset', () => void refetchAll());
    source.addEventListener('bye', () => setLive(false, 'reconnecting…'));
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return setLive(false, 'reconnecting…');
      // The browser gave up (the gateway refused, e.g. 503): retry ourselves, and refetch on return.
      setLive(false, 'offline, retrying…');
      state.reconnectTimer = setTimeout(() => {
        connect();
        void refetchAll();
      }, state.backoffMs);
      state.backoffMs = Math.min(state.backoffMs * 2, 30_000);
    };
  }

  $('order-form').addEventListener('submit', placeOrder);
  $('customer').addEventListener('change', () => setCustomer($('customer').value.trim()));
  renderCart();
  renderOrders();
  void loadProducts();
})();

"""Shop: a product list longer than the screen, a cart, and checkout behind a payment
confirmation ("Pay $X" is the sensitive step)."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.widgets import Button, Dialog, IconButton, ListItem, Page, Text, View
from android_bridge.emulator.world import Order, format_price

CARD = "4242"
FIRST_ORDER_NUMBER = 1001


class ShopApp(App):
    name = "Shop"
    package = "com.edgeagent.shop"
    color = "#a142f4"

    def page_main(self) -> Page:
        query = self.value("search").strip().casefold()
        rows: list[View] = [
            ListItem(desc=p.name, subtitle=format_price(p.price_cents), height=72, rid="product",
                     trailing=[IconButton(desc=f"Add {p.name} to cart", icon="add_cart", rid="add_to_cart",
                                          on_tap=lambda n=p.name: self._add(n))])
            for p in self.world.catalog
            if query in p.name.casefold()
        ]
        body: list[View] = [
            self.field("search", "Search products", style="search"),
            self.list_view("products", rows, 72, empty_text="No products found"),
        ]
        if self.top.notice:
            body.append(Text(text=self.top.notice, style="snackbar", rid="snackbar", height=48))
        return Page(
            title="Shop",
            actions=[IconButton(desc="Cart", icon="cart", on_tap=lambda: self.go("cart"), rid="cart")],
            body=body,
        )

    def page_cart(self) -> Page:
        rows: list[View] = []
        for name, qty in self.world.cart.items():
            product = self.world.product(name)
            assert product is not None
            rows.append(ListItem(desc=name, subtitle=f"{qty} × {format_price(product.price_cents)}", height=72,
                                 rid="cart_item",
                                 trailing=[IconButton(desc=f"Remove {name}", icon="minus", rid="remove", sensitive=True,
                                                      on_tap=lambda n=name: self._remove(n))]))
        total = format_price(self.world.cart_total_cents())
        return Page(
            title="Cart",
            on_up=self.up,
            body=[self.list_view("cart_items", rows, 72, empty_text="Your cart is empty"),
                  Text(text=f"Total: {total}", rid="total", style="headline", height=48)],
            bottom=[Button(text="Checkout", enabled=bool(self.world.cart), rid="checkout", sensitive=True,
                           on_tap=lambda: self.show_dialog("pay"))],
        )

    def page_order(self, number: int, total: str) -> Page:
        return Page(
            title="Order placed",
            body=[
                Text(text=f"Order #{number} confirmed", style="headline", rid="order_status", height=56),
                Text(text=f"Paid {total} with the card ending {CARD}", rid="order_total", style="secondary"),
                Button(text="Continue shopping", style="outlined", on_tap=self.reset_ui, rid="continue"),
            ],
        )

    def dialog_pay(self) -> Dialog:
        total = format_price(self.world.cart_total_cents())
        return Dialog(
            title="Confirm payment",
            message=f"Pay {total} with the card ending {CARD}?",
            buttons=[
                Button(text="Cancel", style="text", on_tap=self.close_dialog, rid="button2"),
                Button(text=f"Pay {total}", style="text", on_tap=self._pay, sensitive=True, rid="button1"),
            ],
        )

    # --- behaviour --------------------------------------------------------------------
    def _add(self, name: str) -> None:
        self.world.cart[name] = self.world.cart.get(name, 0) + 1
        # "2 Rice in cart" repeats the task's own words ("Buy 2 Rice and 1 Milk"), so whether
        # a product's count is reached is a repeated pair of tokens, which a small model's
        # attention finds, rather than a number to match across "Added Rice (2 in cart)".
        self.top.notice = f"{self.world.cart[name]} {name} in cart"

    def _remove(self, name: str) -> None:
        qty = self.world.cart.get(name, 0) - 1
        if qty > 0:
            self.world.cart[name] = qty
        else:
            self.world.cart.pop(name, None)

    def _pay(self) -> None:
        total_cents = self.world.cart_total_cents()
        number = FIRST_ORDER_NUMBER + len(self.world.orders)
        self.world.orders.append(Order(number, dict(self.world.cart), total_cents))
        self.world.cart.clear()
        self.close_dialog()
        self.stack = self.stack[:1]
        self.go("order", number=number, total=format_price(total_cents))

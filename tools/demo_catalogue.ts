/**
 * @module
 * The demo shop's data: the catalogue (every item the demo events and related lists name) and
 * one promotion per region, the single source of the discount that both the promotion API and
 * the shop's pages apply, and that the demo rules' promo slots advertise.
 */

/** One item of the demo catalogue. */
export interface Product {
  id: string;
  name: string;
  /** Price before any promotion, in whole euros. */
  price: number;
  /** Colour of its picture (`/images/{id}.svg`). */
  colour: string;
}

/** The catalogue; `tools/demo_events.ndjson` views, carts and related lists name only these. */
export const CATALOGUE: readonly Product[] = [
  { id: "p7", name: "Trail running shoe", price: 120, colour: "#2f7d5b" },
  { id: "p13", name: "Merino wool socks", price: 18, colour: "#8a5a9e" },
  { id: "p42", name: "Rain shell jacket", price: 180, colour: "#2b6cb0" },
  { id: "p3", name: "Insulated bottle", price: 30, colour: "#c05621" },
  { id: "p21", name: "Trekking poles", price: 85, colour: "#4a5568" },
  { id: "p5", name: "Head torch", price: 45, colour: "#b7791f" },
];

/** A region's promotion. */
export interface Promotion {
  /** The rules' region name (`GLOBAL` for every other). */
  region: string;
  headline: string;
  /** Share taken off every price. */
  discount: number;
}

/** Promotions by the path segment of `/api/products/promotions/{name}` (the demo rules' rewrites). */
export const PROMOTIONS: Readonly<Record<string, Promotion>> = {
  europe: { region: "EU", headline: "Winter sale across Europe", discount: 0.2 },
  apac: { region: "APAC", headline: "Lunar new year picks", discount: 0.15 },
  us: { region: "US", headline: "Holiday deals", discount: 0.1 },
  global: { region: "GLOBAL", headline: "This week's favourites", discount: 0.05 },
};

/**
 * The promotion of a region, as the edge names it in `x-edge-region`.
 *
 * @param region the region, or null when the edge sent none
 * @returns its promotion, the global one for any other region
 */
export function promotionFor(region: string | null): Promotion {
  return Object.values(PROMOTIONS).find((promotion) => promotion.region === region) ?? PROMOTIONS.global!;
}

/**
 * The price of a product under a promotion, rounded to whole euros.
 *
 * @param product the product
 * @param promotion the promotion in force
 * @returns the discounted price
 */
export function priceUnder(product: Product, promotion: Promotion): number {
  return Math.round(product.price * (1 - promotion.discount));
}

/**
 * The text a promo slot shows for a promotion: its headline and the percentage off.
 *
 * @param promotion the promotion
 * @returns e.g. `Winter sale across Europe: 20% off`
 */
export function promotionText(promotion: Promotion): string {
  return `${promotion.headline}: ${Math.round(promotion.discount * 100)}% off`;
}

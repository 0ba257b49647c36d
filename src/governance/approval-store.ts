/**
 * Kept so callers written against it still work: the approvals table's repository now lives in
 * the store (src/store/approvals.ts) and is `Store.approvals`. Use that; this goes once nothing
 * imports it.
 *
 * @deprecated use `store.approvals`.
 */
export { approvalRepo as approvalStore } from '../store/approvals.js';

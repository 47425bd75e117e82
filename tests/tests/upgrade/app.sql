-- The application's own objects that Spine attaches to (a table with a database
-- webhook): made in both databases the upgrade test compares, so that the
-- comparison also covers what Spine put on them (the webhook's trigger).
CREATE TABLE public.orders (id int PRIMARY KEY, note text);
SELECT spine.create_webhook('orders_hook', 'public.orders', ARRAY['INSERT'],
                            '{"url": "http://127.0.0.1:9/hook"}');

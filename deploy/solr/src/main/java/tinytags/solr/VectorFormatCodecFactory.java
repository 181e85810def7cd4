package tinytags.solr;

import java.util.Locale;
import org.apache.lucene.codecs.Codec;
import org.apache.lucene.codecs.FilterCodec;
import org.apache.lucene.codecs.KnnVectorsFormat;
import org.apache.lucene.codecs.lucene912.Lucene912Codec;
import org.apache.lucene.codecs.lucene99.Lucene99HnswScalarQuantizedVectorsFormat;
import org.apache.lucene.codecs.perfield.PerFieldKnnVectorsFormat;
import org.apache.solr.common.SolrException;
import org.apache.solr.common.util.NamedList;
import org.apache.solr.core.SchemaCodecFactory;
import org.apache.solr.core.SolrCore;
import org.apache.solr.schema.DenseVectorField;
import org.apache.solr.schema.SchemaField;

/**
 * Solr's SchemaCodecFactory with a choice of how DenseVectorField fields are written
 * (solrconfig.xml: {@code <str name="vectorFormat">${tinytags.vector.format:hnsw}</str>}):
 *
 * <ul>
 *   <li>{@code hnsw}: exactly Solr's own choice (Lucene99HnswVectorsFormat with the field type's
 *       hnswMaxConnections and hnswBeamWidth), so existing indexes are untouched;
 *   <li>{@code hnsw-int8}: the same graph over 7-bit scalar-quantized copies
 *       (Lucene99HnswScalarQuantizedVectorsFormat, registered by Lucene itself); the floats are
 *       kept too, so exact scores do not change;
 *   <li>{@code flat}: no graph at all ({@link FlatVectorsFormat}): indexing skips the graph
 *       building that is most of Solr's work per document, and only exact scoring
 *       ({!func}vectorSimilarity) answers; {!knn} finds nothing.
 * </ul>
 *
 * <p>The choice is read when a segment is written; each segment records its format, so a core may
 * switch and still read what it wrote before (merges rewrite old segments in the new format).
 */
public class VectorFormatCodecFactory extends SchemaCodecFactory {

  public static final String VECTOR_FORMAT = "vectorFormat";

  private String vectorFormat = "hnsw";
  private volatile SolrCore core;
  private Codec codec;

  @Override
  public void init(NamedList<?> args) {
    Object value = args.remove(VECTOR_FORMAT);
    if (value != null) {
      vectorFormat = value.toString().trim().toLowerCase(Locale.ROOT);
    }
    if (!vectorFormat.equals("hnsw")
        && !vectorFormat.equals("hnsw-int8")
        && !vectorFormat.equals("flat")) {
      throw new SolrException(
          SolrException.ErrorCode.SERVER_ERROR,
          "codecFactory " + VECTOR_FORMAT + " should be hnsw, hnsw-int8 or flat, got '" + value + "'");
    }
    super.init(args);
    Lucene912Codec solrCodec = (Lucene912Codec) super.getCodec();
    KnnVectorsFormat perField =
        new PerFieldKnnVectorsFormat() {
          @Override
          public KnnVectorsFormat getKnnVectorsFormatForField(String field) {
            return formatFor(field, solrCodec);
          }
        };
    // Same codec name as Solr's: segments stay readable by a stock Lucene912 codec, which finds
    // each field's vector format by the name the segment recorded.
    codec =
        new FilterCodec(solrCodec.getName(), solrCodec) {
          @Override
          public KnnVectorsFormat knnVectorsFormat() {
            return perField;
          }
        };
  }

  @Override
  public void inform(SolrCore core) {
    super.inform(core);
    this.core = core;
  }

  @Override
  public Codec getCodec() {
    return codec;
  }

  private KnnVectorsFormat formatFor(String field, Lucene912Codec solrCodec) {
    if (!vectorFormat.equals("hnsw")) {
      SchemaField schemaField = core.getLatestSchema().getFieldOrNull(field);
      if (schemaField != null && schemaField.getType() instanceof DenseVectorField) {
        DenseVectorField type = (DenseVectorField) schemaField.getType();
        if (vectorFormat.equals("flat")) {
          return new FlatVectorsFormat();
        }
        return new Lucene99HnswScalarQuantizedVectorsFormat(
            type.getHnswMaxConn(), type.getHnswBeamWidth());
      }
    }
    return solrCodec.getKnnVectorsFormatForField(field);
  }
}
